"""Gradient IQA guidance (IQA-Adapter paper, Sec. 3.1): classifier guidance by a differentiable NR metric.

Modules: ``schedule`` (sigma_t per scheduler type, the omega ramp), ``guide``
(safe log, the eps -> eps_hat computation, the scheduler-step wrapper),
``generator`` (the ``guidance:<metric>`` generator).
"""

from .generator import GuidanceGenerator, build_guidance
from .guide import GuidanceConfig, IQAGuidance, guided_scheduler, log_quality, safe_log
from .schedule import NoiseLevel, noise_level, omega

__all__ = ["GuidanceConfig", "GuidanceGenerator", "IQAGuidance", "NoiseLevel", "build_guidance", "guided_scheduler",
           "log_quality", "noise_level", "omega", "safe_log"]
