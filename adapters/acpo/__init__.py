"""ACPO: quality fine-tuning of a diffusion model with LoRA against a bounded IQA evaluator.

Modules, one job each: ``config`` (settings, the paper's defaults), ``evaluators`` (stage 1: (a) metric,
(b) IPCE-style CLIP scorer, (c) two-stream NR-IQA + trainer), ``ipce`` (stage-1 fit of (b) on an image/MOS
table), ``mos_table`` (reading those tables), ``evaluator_spec`` (``--evaluator`` strings, evaluator
checkpoints), ``lora`` (peft LoRA add / toggle / save / load), ``losses`` (the loss of one batch), ``rollout``
(x0 estimate), ``checkpoints`` (``checkpoint-N/``, resume), ``plotting`` (loss curve), ``training`` (the loop),
``generator`` (the ``acpo:<folder>`` generator), ``cli`` (``train acpo``, ``train ipce``, ``train two-stream``).
"""

from .config import AcpoConfig
from .evaluator_spec import build_evaluator, load_two_stream, save_two_stream
from .evaluators import IPCEEvaluator, MetricEvaluator, TwoStreamIQA, train_two_stream
from .generator import AcpoGenerator, build_acpo
from .ipce import load_ipce, train_ipce
from .lora import adapters_disabled, add_lora, load_lora, save_lora
from .training import AcpoResult, evaluate_acpo, prepare_for_training, train_acpo

__all__ = ["AcpoConfig", "AcpoGenerator", "AcpoResult", "IPCEEvaluator", "MetricEvaluator", "TwoStreamIQA",
           "adapters_disabled", "add_lora", "build_acpo", "build_evaluator", "evaluate_acpo", "load_ipce",
           "load_lora", "load_two_stream", "prepare_for_training", "save_lora", "save_two_stream", "train_acpo",
           "train_ipce", "train_two_stream"]
