"""Built-in benchmark plugins (import name ``iqabench.benchmarks``); importing registers them."""

from . import (  # noqa: E402  (robustness and consistency benchmarks)
    adversarial_gradcam,  # noqa: F401
    condition_sweep,  # noqa: F401
    fr_distances,  # noqa: F401
    relgain,  # noqa: F401
    scale_sweep,  # noqa: F401
    scores,  # noqa: F401
    seed_consistency,  # noqa: F401
)
from .fid_topk import benchmark as _fid_topk  # noqa: F401
from .geneval import benchmark as _geneval  # noqa: F401
