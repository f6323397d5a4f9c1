"""Importing this module registers every built-in generator family; the generator registry imports it lazily.

Kept out of ``iqabench/adapters/__init__.py`` so that importing one light
submodule (a plugin's ``cli``) does not import torch and diffusers through its
siblings. Add one import line per adapter module that registers generators.
"""

from . import presets  # noqa: F401  (sdxl, sd15, sd21, diffusers:<id>, tiny-sd, tiny-sdxl)
from .acpo import generator as _acpo  # noqa: F401
from .guidance import generator as _guidance  # noqa: F401
from .iqa_adapter import generator as _iqa_adapter  # noqa: F401
