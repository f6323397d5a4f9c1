"""IQA/IAA metrics: every pyiqa metric by its pyiqa name, plus user-registered models.

As in ``pyiqa/default_model_configs.py`` + ``inference_model.py``, a metric is
declarative metadata (NR/FR, lower_better, score range, differentiable) plus a
factory; one wrapper (:class:`Metric`) handles device, batching, input range
and the differentiable ``loss`` used by guidance and training.

- ``wrapper``: :class:`Metric`, :class:`MetricInfo`, the score-cache fingerprint;
- ``registration``: :func:`register_metric`, :func:`build_metric` and the checks before a run;
- ``pyiqa_metrics``: registers every pyiqa metric from pyiqa's ``DEFAULT_CONFIGS``;
- ``pyiqa_weights``: which files each pyiqa metric loads and whether they are all present;
- ``preference``: prompt-aware text-image metrics (pickscore, clipscore, clipscore_100, hpsv2, imagereward,
  ``ipce:<file>``), with
  their hub files in ``preference_weights``.

Registering your own model takes a few lines::

    from iqabench.metrics import register_metric

    @register_metric("my_sharpness", lower_better=False, differentiable=True)
    def build(device):
        return MySharpnessNet().to(device)   # nn.Module: [N,3,H,W] in [0,1] -> [N] scores
"""

from .preference import register_preference_metrics
from .preference_weights import preference_weight_files
from .pyiqa_metrics import NO_DOWNLOAD_METRICS, pyiqa_info, register_pyiqa_metrics
from .pyiqa_weights import WeightFile, pyiqa_cache_dir, pyiqa_weight_files, pyiqa_weights_status
from .registration import (
                           build_metric,
                           check_available,
                           metric_fingerprint,
                           metric_info,
                           metric_needs,
                           offline_mode,
                           parse_metric_list,
                           register_metric,
)
from .wrapper import Metric, MetricContractError, MetricInfo, MetricUnavailableError

__all__ = ["NO_DOWNLOAD_METRICS", "Metric", "MetricContractError", "MetricInfo", "MetricUnavailableError",
           "WeightFile", "build_metric",
           "check_available", "metric_fingerprint", "metric_info", "metric_needs", "offline_mode", "parse_metric_list",
           "preference_weight_files", "pyiqa_cache_dir", "pyiqa_info", "pyiqa_weight_files", "pyiqa_weights_status",
           "register_metric"]

register_pyiqa_metrics()
register_preference_metrics()
