"""How many BLAS threads hlmbridge's own numerical sections use (the thread policy).

numpy's OpenBLAS starts one thread per core for every dense product it thinks is large
enough. hlmbridge's kernels are many small batched products (per-group blocks of a few to a
few hundred columns), where those threads gain little on a quiet machine and, on a busy
one (a CI runner, ``fit_many`` workers, R in the same process, a laptop's browser), spin and
wait: a three-level fit that takes 3 s with one thread took 9.5 s with two threads while
another process kept the second core busy (``benchmarks/run.py --threads`` measures it).

So hlmbridge runs its own numerical sections (a whole :func:`hlmbridge.fit`, the
Stata-parity evaluation, the df methods and the random effects) with at most
:func:`blas_thread_limit` BLAS threads, through threadpoolctl, and gives the threads back on
the way out (what the caller's own numpy code gets is unchanged). The limit is

- ``HLMBRIDGE_BLAS_THREADS`` when set (a positive number, or ``all`` for no limit);
- otherwise none at all when the user has set one of the BLAS libraries' own variables
  (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
  ``BLIS_NUM_THREADS``, ``VECLIB_MAXIMUM_THREADS``): the user's choice wins;
- otherwise 1.

Examples
--------
>>> import numpy as np
>>> with bounded_blas():
...     float(np.ones((3, 3)).dot(np.ones(3)).sum())
9.0
>>> @with_bounded_blas
... def gram(a):
...     return a.T @ a
>>> gram(np.eye(2)).tolist()
[[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from hlmbridge.errors import UsageError

__all__ = ["ENV_VAR", "USER_BLAS_VARS", "blas_thread_limit", "bounded_blas", "with_bounded_blas"]

#: hlmbridge's own setting: a positive number of threads, or ``all``.
ENV_VAR = "HLMBRIDGE_BLAS_THREADS"
#: The BLAS libraries' own variables; when the user set one, hlmbridge sets no limit.
USER_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS")
_DEFAULT = 1

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_depth = 0
_controller: Any = None


def blas_thread_limit() -> int | None:
    """The number of BLAS threads hlmbridge's numerical sections use; ``None``: no limit.

    >>> import os
    >>> old = os.environ.pop(ENV_VAR, None)
    >>> os.environ[ENV_VAR] = "2"; blas_thread_limit()
    2
    >>> os.environ[ENV_VAR] = "all"; blas_thread_limit() is None
    True
    >>> _ = os.environ.pop(ENV_VAR) if old is None else os.environ.__setitem__(ENV_VAR, old)
    """
    own = os.environ.get(ENV_VAR, "").strip()
    if own:
        if own.lower() == "all":
            return None
        try:
            n = int(own)
        except ValueError:
            n = 0
        if n < 1:
            raise UsageError(f"{ENV_VAR} must be a positive whole number or 'all', got {own!r}")
        return n
    if any(os.environ.get(v, "").strip() for v in USER_BLAS_VARS):
        return None
    return _DEFAULT


def _get_controller() -> Any:
    global _controller
    if _controller is None:
        # threadpoolctl sees the BLAS libraries loaded when the controller is made: scipy's
        # wheels bring an OpenBLAS of their own besides numpy's, loaded with scipy.linalg.
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextmanager
def bounded_blas() -> Iterator[None]:
    """Run the body with at most :func:`blas_thread_limit` BLAS threads (nested uses cost
    nothing: only the outermost one sets and restores the limit)."""
    global _depth
    limit = blas_thread_limit()
    with _lock:
        outer = _depth == 0
        _depth += 1
    try:
        if outer and limit is not None:
            with _get_controller().limit(limits=limit, user_api="blas"):
                yield
        else:
            yield
    finally:
        with _lock:
            _depth -= 1


def with_bounded_blas(func: F) -> F:
    """Decorator: ``func`` runs inside :func:`bounded_blas`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with bounded_blas():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
