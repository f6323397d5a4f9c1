"""Silence one known, harmless log line from a dependency, at its source logger.

``bitsandbytes`` (>= 0.48) logs "Failed to load CPU gemm_4bit_forward from
kernels-community ..." at *import* time on CPUs with AVX512-BF16 when the
optional ``kernels`` package is absent. iqabench never runs 4-bit CPU kernels,
yet the line appeared in every run: ``diffusers.models.modeling_utils`` imports
``diffusers.quantizers.bitsandbytes``, which imports bitsandbytes whenever it is
installed (``peft`` does the same). We drop exactly that record with a filter on
the ``bitsandbytes.backends.cpu.ops`` logger; every other bitsandbytes message
still shows. Installed when this module is imported, which ``iqabench/__init__.py``
does first, so it is in place before any of those imports.
"""

from __future__ import annotations

import logging

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_KERNELS_LINE = "Failed to load CPU gemm_4bit_forward"


class _DropBnbKernelsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BNB_KERNELS_LINE)


def silence_known_noise() -> None:
    """Idempotent: adds the filter once."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropBnbKernelsNotice) for f in logger.filters):
        logger.addFilter(_DropBnbKernelsNotice())


silence_known_noise()
