"""IQA-Adapter (Abud et al., ICCV 2025): quality-conditioned generation through decoupled cross-attention.

Modules: ``conditioning`` (stats, targets, positional encoding), ``projection``,
``attention`` (the processor), ``adapter`` (the module on a UNet),
``checkpoint`` (released layout, metadata, presets), ``generator`` (the
``iqa-adapter`` generator), ``training``, ``dataset`` (score-dataset), ``cli``.
"""

from iqabench.support.lazy import lazy_exports

# names load on first use (iqabench/support/lazy.py): importing a submodule such as .cli stays cheap
__getattr__, __dir__ = lazy_exports(__name__, {
    "AdapterConfig": ".adapter",
    "IQAAdapter": ".adapter",
    "PRESETS": ".checkpoint",
    "load_adapter": ".checkpoint",
    "read_checkpoint": ".checkpoint",
    "save_adapter": ".checkpoint",
    "IQAAdapterGenerator": ".generator",
    "build_iqa_adapter": ".generator",
})

__all__ = ["AdapterConfig", "IQAAdapter", "IQAAdapterGenerator", "PRESETS", "build_iqa_adapter", "load_adapter",
           "read_checkpoint", "save_adapter"]
