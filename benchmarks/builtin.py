"""Importing this module registers every built-in benchmark; the benchmark registry imports it lazily.

Kept out of ``iqabench/benchmarks/__init__.py`` so that importing one light
submodule (``geneval.cli`` for ``iqabench --help``) does not import every
benchmark's dependencies.
"""

from . import (  # noqa: F401  (robustness and consistency benchmarks)
    adversarial_gradcam,
    condition_sweep,
    fr_distances,
    relgain,
    scale_sweep,
    scores,
    seed_consistency,
)
from .fid_topk import benchmark as _fid_topk  # noqa: F401
from .geneval import benchmark as _geneval  # noqa: F401
