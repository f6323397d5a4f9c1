"""ACPO: quality fine-tuning of a diffusion model with LoRA against a bounded IQA evaluator.

Modules: ``evaluators`` (stage 1: (a) metric, (b) IPCE-style CLIP scorer,
(c) two-stream NR-IQA + trainer), ``lora`` (peft LoRA add / toggle / save /
load), ``training`` (stage 2: the late-window loss, one-step and rollout x0),
``generator`` (the ``acpo:<folder>`` generator), ``cli`` (``train acpo``).
"""

from .evaluators import IPCEEvaluator, MetricEvaluator, TwoStreamIQA, train_two_stream
from .generator import AcpoGenerator, build_acpo
from .lora import adapters_disabled, add_lora, load_lora, save_lora
from .training import AcpoConfig, AcpoResult, evaluate_acpo, prepare_for_training, train_acpo

__all__ = ["AcpoConfig", "AcpoGenerator", "AcpoResult", "IPCEEvaluator", "MetricEvaluator", "TwoStreamIQA",
           "adapters_disabled", "add_lora", "build_acpo", "evaluate_acpo", "load_lora", "prepare_for_training",
           "save_lora", "train_acpo", "train_two_stream"]
