"""Stage 4 — inference computed once for all engines from the design and the engine's estimates.

- ``stata_parity``  log likelihood, (X'V⁻¹X)⁻¹, the observed information of the variance
  components in Stata's metric, Wald and LR tests (``evaluate``, ``linear_loglik``)

This package imports nothing at load time; import the module you need.
"""
