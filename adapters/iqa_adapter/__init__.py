"""IQA-Adapter (Abud et al., ICCV 2025): quality-conditioned generation through decoupled cross-attention.

Modules: ``conditioning`` (stats, targets, positional encoding), ``projection``,
``attention`` (the processor), ``adapter`` (the module on a UNet),
``checkpoint`` (released layout, metadata, presets), ``generator`` (the
``iqa-adapter`` generator), ``training``, ``dataset`` (score-dataset), ``cli``.
"""

from .adapter import AdapterConfig, IQAAdapter
from .checkpoint import PRESETS, load_adapter, read_checkpoint, save_adapter
from .generator import IQAAdapterGenerator, build_iqa_adapter

__all__ = ["AdapterConfig", "IQAAdapter", "IQAAdapterGenerator", "PRESETS", "build_iqa_adapter", "load_adapter",
           "read_checkpoint", "save_adapter"]
