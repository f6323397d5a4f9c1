"""Built-in generator implementations (import name ``iqabench.adapters``).

Importing this package registers every built-in generator family with
``iqabench.generators.register_generator``; the registry imports it lazily on
the first lookup. Add one import line per adapter module below.
"""

from . import (
    acpo,  # noqa: F401
    guidance,  # noqa: F401
    iqa_adapter,  # noqa: F401
    presets,  # noqa: F401  (sdxl, sd15, sd21, diffusers:<id>, tiny-sd, tiny-sdxl)
)
