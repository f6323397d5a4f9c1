"""ACPO: quality fine-tuning of a diffusion model with LoRA against a bounded IQA evaluator.

Modules, one job each: ``config`` (settings, the paper's defaults), ``evaluators`` (stage 1: (a) metric,
(b) IPCE-style CLIP scorer, (c) two-stream NR-IQA + trainer), ``ipce`` (stage-1 fit of (b) on an image/MOS
table), ``mos_table`` (reading those tables), ``evaluator_spec`` (``--evaluator`` strings, evaluator
checkpoints), ``lora`` (peft LoRA add / toggle / save / load), ``losses`` (the loss of one batch), ``rollout``
(x0 estimate), ``checkpoints`` (``checkpoint-N/``, resume), ``plotting`` (loss curve), ``training`` (the loop),
``generator`` (the ``acpo:<folder>`` generator), ``cli`` (``train acpo``, ``train ipce``, ``train two-stream``).
"""

from iqabench.support.lazy import lazy_exports

# names load on first use (iqabench/support/lazy.py): importing a submodule such as .cli stays cheap
__getattr__, __dir__ = lazy_exports(__name__, {
    "AcpoConfig": ".config",
    "build_evaluator": ".evaluator_spec",
    "load_two_stream": ".evaluator_spec",
    "save_two_stream": ".evaluator_spec",
    "IPCEEvaluator": ".evaluators",
    "MetricEvaluator": ".evaluators",
    "TwoStreamIQA": ".evaluators",
    "train_two_stream": ".evaluators",
    "AcpoGenerator": ".generator",
    "build_acpo": ".generator",
    "load_ipce": ".ipce",
    "train_ipce": ".ipce",
    "adapters_disabled": ".lora",
    "add_lora": ".lora",
    "load_lora": ".lora",
    "save_lora": ".lora",
    "AcpoResult": ".training",
    "evaluate_acpo": ".training",
    "prepare_for_training": ".training",
    "train_acpo": ".training",
})

__all__ = ["AcpoConfig", "AcpoGenerator", "AcpoResult", "IPCEEvaluator", "MetricEvaluator", "TwoStreamIQA",
           "adapters_disabled", "add_lora", "build_acpo", "build_evaluator", "evaluate_acpo", "load_ipce",
           "load_lora", "load_two_stream", "prepare_for_training", "save_lora", "save_two_stream", "train_acpo",
           "train_ipce", "train_two_stream"]
