"""Gradient IQA guidance (IQA-Adapter paper, Sec. 3.1): classifier guidance by a differentiable NR metric.

Modules: ``schedule`` (sigma_t per scheduler type, the omega ramp), ``guide``
(safe log, the eps -> eps_hat computation, the scheduler-step wrapper),
``generator`` (the ``guidance:<metric>`` generator).
"""

from iqabench.support.lazy import lazy_exports

# names load on first use (iqabench/support/lazy.py): importing a submodule such as .cli stays cheap
__getattr__, __dir__ = lazy_exports(__name__, {
    "GuidanceGenerator": ".generator",
    "build_guidance": ".generator",
    "GuidanceConfig": ".guide",
    "IQAGuidance": ".guide",
    "guided_scheduler": ".guide",
    "log_quality": ".guide",
    "safe_log": ".guide",
    "NoiseLevel": ".schedule",
    "noise_level": ".schedule",
    "omega": ".schedule",
})

__all__ = ["GuidanceConfig", "GuidanceGenerator", "IQAGuidance", "NoiseLevel", "build_guidance", "guided_scheduler",
           "log_quality", "noise_level", "omega", "safe_log"]
