"""The math core: pure numpy/scipy/torch, no I/O, no storage, tasks, flows or Prefect (docs/architecture.md).

Subpackages by field, each exporting its public API in ``__all__``: :mod:`otcore.ot` (optimal-transport solvers),
:mod:`otcore.mesh` (surface parameterization and geometry images), :mod:`otcore.points` (point-cloud distances and
the autodecoder), :mod:`otcore.splats` (Gaussian splats: rendering, reduction, fine-tuning); shared ground at the top:
:mod:`otcore.kd_tree`, :mod:`otcore.errors`, :mod:`otcore.device`.
"""
