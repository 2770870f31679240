"""The manifest of a fixture set: every file with its sha256, and each case file's case and numbers.

``MANIFEST.toml`` sits at the top of a fixture set (``fixtures/stata/MANIFEST.toml`` for the
bundled one). ``hlmbridge import-stata`` records the files it writes in it (the nearest
``MANIFEST.toml`` at or above ``--out``; a new one in ``--out`` when there is none), and
``hlmbridge validate`` checks it before fitting anything: a file that is missing, extra or
changed fails, naming the file and the command that accepts a deliberate change
(``hlmbridge validate --fixtures DIR --update-manifest``). So deleting a case file, copying a
case under a new name or editing a number cannot pass unnoticed. Hashes are over the file's
bytes with CRLF line ends read as LF (a Windows checkout hashes alike).

Examples
--------
>>> from hlmbridge.reference.fixtures import FIXTURE_ROOT
>>> m = read_manifest(FIXTURE_ROOT / MANIFEST_NAME)
>>> m["seed/L0174_mixed.toml"].case, m["seed/L0174_mixed.toml"].numbers
('L0174_mixed', 26)
>>> check_manifest(FIXTURE_ROOT)  # the bundled set is what its manifest says
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hlmbridge.errors import FixtureError
from hlmbridge.reference.fixtures import (Reference, _check_format_keys, _read_utf8, _toml_str, fixture_files,
                                          load_references)

__all__ = ["MANIFEST_NAME", "Entry", "build_entries", "check_manifest", "find_manifest", "read_manifest",
           "record_files", "render_manifest", "update_manifest"]

MANIFEST_NAME = "MANIFEST.toml"


@dataclass(frozen=True)
class Entry:
    """One file of a fixture set: its path (POSIX, relative to the manifest's folder), content hash,
    and for a case file its case name and number count (for another TOML file its ``format``)."""

    path: str
    sha256: str
    case: str | None = None
    numbers: int | None = None
    format: str | None = None

    def describe(self) -> str:
        """``case L0174_mixed, 31 numbers`` / ``format overrides`` / ``a file``."""
        if self.case is not None:
            return f"case {self.case}, {self.numbers} numbers"
        return f"format {self.format}" if self.format else "a file"


def file_hash(path: Path) -> str:
    """sha256 of the file's bytes, CRLF read as LF."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FixtureError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def find_manifest(start: str | Path) -> Path | None:
    """The nearest fixture manifest in ``start`` (a folder, or a file's folder) or a folder above it.

    In ``start`` itself any ``MANIFEST.toml`` counts (a damaged one is then reported, never passed
    over); above it, only one that says ``format = "manifest"`` (another project's file of that name
    is not this fixture set's).
    """
    p = Path(start).resolve()
    own = [p] if p.is_dir() else []
    for d in own + list(p.parents):
        m = d / MANIFEST_NAME
        if m.is_file() and (d in own or _is_manifest(m)):
            return m
    return None


def _is_manifest(path: Path) -> bool:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")).get("format") == "manifest"
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def build_entries(root: str | Path, refs: Sequence[Reference] | None = None) -> dict[str, Entry]:
    """An entry for every file under ``root`` but the manifest; loads (and so checks) every fixture."""
    base = Path(root)
    refs = load_references(base) if refs is None else refs
    by_path = {r.path: r for r in refs}
    out: dict[str, Entry] = {}
    for p in fixture_files(base):
        rel = p.relative_to(base).as_posix()
        if rel != MANIFEST_NAME:
            out[rel] = _entry(p, rel, by_path.get(str(p)))
    return out


def _entry(p: Path, rel: str, ref: Reference | None) -> Entry:
    digest = file_hash(p)
    if ref is not None:
        return Entry(rel, digest, ref.case, len(ref.values))
    fmt = None
    if p.suffix == ".toml":
        try:
            fmt = tomllib.loads(_read_utf8(p)).get("format")
        except tomllib.TOMLDecodeError:
            fmt = None
    return Entry(rel, digest, format=fmt if isinstance(fmt, str) else None)


def render_manifest(entries: Mapping[str, Entry]) -> str:
    """The manifest text (deterministic: files sorted by path)."""
    items = [entries[k] for k in sorted(entries)]
    cases = [e for e in items if e.case is not None]
    out = [
        "# hlmbridge fixture manifest: every file of this fixture set, with its sha256 (CRLF read as LF)",
        "# and, for a case file, its case and how many numbers it holds. `hlmbridge validate` fails on a",
        "# file that is missing, extra or changed. Written by `hlmbridge import-stata` (the files it writes)",
        "# and by `hlmbridge validate --fixtures DIR --update-manifest` (to accept a deliberate change).",
        "",
        'format = "manifest"',
        f"files = {len(items)}",
        f"cases = {len(cases)}",
        f"numbers = {sum(e.numbers or 0 for e in cases)}",
    ]
    for e in items:
        out += ["", "[[file]]", f"path = {_toml_str(e.path)}", f"sha256 = {_toml_str(e.sha256)}"]
        if e.case is not None:
            out += [f"case = {_toml_str(e.case)}", f"numbers = {e.numbers}"]
        elif e.format is not None:
            out.append(f"format = {_toml_str(e.format)}")
    return "\n".join(out) + "\n"


def read_manifest(path: str | Path) -> dict[str, Entry]:
    """The entries of a manifest file, by path; a malformed manifest is a FixtureError."""
    p = Path(path)
    text = _read_utf8(p, "manifest")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FixtureError(f"TOML syntax error: {exc}", path=str(p)) from exc
    if data.get("format") != "manifest":
        raise FixtureError('not a fixture manifest (no top-level `format = "manifest"`)', path=str(p))
    _check_format_keys(data, "manifest", text, p)
    out: dict[str, Entry] = {}
    for k, t in enumerate(data.get("file", []), start=1):
        path_, digest = t.get("path"), t.get("sha256")
        if not isinstance(path_, str) or not isinstance(digest, str) or len(digest) != 64:
            raise FixtureError(f"[[file]] #{k} needs path and a 64-digit sha256", path=str(p))
        if path_ in out:
            raise FixtureError(f"[[file]] #{k}: {path_} is listed twice", path=str(p))
        out[path_] = Entry(path_, digest, t.get("case"), t.get("numbers"), t.get("format"))
    totals = {"files": len(out), "cases": sum(e.case is not None for e in out.values()),
              "numbers": sum(e.numbers or 0 for e in out.values() if e.case is not None)}
    for key, n in totals.items():
        if data.get(key) != n:
            raise FixtureError(f"{key} = {data.get(key)!r}, but the [[file]] entries add up to {n}: edited by hand?",
                               path=str(p))
    return out


def _accept_hint(root: Path) -> str:
    return (f"if the change is deliberate, accept it with `hlmbridge validate --fixtures {root} --update-manifest` "
            f"(it rewrites {root / MANIFEST_NAME})")


def check_manifest(fixtures: str | Path) -> None:
    """Fail unless the files under ``fixtures`` (a folder, or one file) are those its manifest lists.

    The manifest is the nearest ``MANIFEST.toml`` at or above ``fixtures``; only its entries under
    ``fixtures`` are compared. No manifest, a missing, extra or changed file is a FixtureError
    saying which files, what the manifest recorded (case, numbers), and how to accept the change.
    """
    target = Path(fixtures)
    mpath = find_manifest(target)
    if mpath is None:
        where = target if target.is_dir() else target.parent
        raise FixtureError(f"no {MANIFEST_NAME} here or in a folder above: a fixture set is checked against its "
                           f"manifest (`hlmbridge import-stata` writes one); to write one for these files run "
                           f"`hlmbridge validate --fixtures {where} --update-manifest`", path=str(target))
    root = mpath.parent
    listed = read_manifest(mpath)
    scope = target.resolve().relative_to(root.resolve()).as_posix()
    scope = "" if scope == "." else scope

    def inside(rel: str) -> bool:
        return not scope or rel == scope or rel.startswith(scope + "/")

    if target.is_file():
        present = {scope: Entry(scope, file_hash(target))} if scope != MANIFEST_NAME else {}
    else:
        present = {}
        for p in fixture_files(target):
            rel = (Path(scope) / p.relative_to(target)).as_posix() if scope else p.relative_to(target).as_posix()
            if rel != MANIFEST_NAME:
                present[rel] = Entry(rel, file_hash(p))
    problems: list[str] = []
    for rel, e in sorted(listed.items()):
        if not inside(rel):
            continue
        if rel not in present:
            problems.append(f"{root / rel} is missing (the manifest lists it: {e.describe()})")
        elif present[rel].sha256 != e.sha256:
            problems.append(f"{root / rel} changed ({e.describe()} when the manifest was written; sha256 "
                            f"{e.sha256[:12]}... now {present[rel].sha256[:12]}...)")
    for rel in sorted(set(present) - set(listed)):
        problems.append(f"{root / rel} is not in the manifest (a new or copied file?)")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise FixtureError(f"{len(problems)} file(s) differ from the manifest: {shown}. {_accept_hint(root)}",
                           path=str(mpath))


def _write(mpath: Path, entries: Mapping[str, Entry]) -> None:
    try:
        mpath.write_text(render_manifest(entries), encoding="utf-8")
    except OSError as exc:
        raise FixtureError(f"cannot write: {exc.strerror}", path=str(mpath)) from exc


def update_manifest(fixtures: str | Path) -> tuple[Path, list[str]]:
    """Rewrite the manifest of the fixture set ``fixtures`` belongs to (or write one in ``fixtures``).

    Every fixture is loaded first (a broken one is refused, never recorded). Returns the manifest's
    path and one line per change (``added``, ``removed``, ``changed`` with the case and numbers).
    """
    target = Path(fixtures)
    if not target.exists():
        raise FixtureError("no such fixture directory", path=str(target))
    mpath = find_manifest(target) or ((target if target.is_dir() else target.parent) / MANIFEST_NAME)
    root = mpath.parent
    old = read_manifest(mpath) if mpath.is_file() else {}
    new = build_entries(root)
    changes = [f"removed {rel} ({e.describe()})" for rel, e in sorted(old.items()) if rel not in new]
    for rel, e in sorted(new.items()):
        if rel not in old:
            changes.append(f"added {rel} ({e.describe()})")
        elif old[rel].sha256 != e.sha256:
            changes.append(f"changed {rel} ({old[rel].describe()} -> {e.describe()})")
    if changes or not mpath.is_file():
        _write(mpath, new)
    return mpath, changes


def record_files(out_dir: str | Path, written: Iterable[tuple[Path, Reference]]) -> Path:
    """Record files ``import-stata`` wrote into ``out_dir`` in the nearest manifest at or above it (new
    in ``out_dir`` when there is none); other entries are kept as they are. Returns the manifest's path."""
    out = Path(out_dir)
    mpath = find_manifest(out) or out / MANIFEST_NAME
    root = mpath.parent
    entries = read_manifest(mpath) if mpath.is_file() else {}
    for p, ref in written:
        rel = Path(p).resolve().relative_to(root.resolve()).as_posix()
        entries[rel] = _entry(Path(p), rel, ref)
    _write(mpath, entries)
    return mpath
