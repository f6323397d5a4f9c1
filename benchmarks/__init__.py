"""Built-in benchmark plugins (import name ``iqabench.benchmarks``); importing registers them."""

from . import (
    relgain,  # noqa: F401
    scores,  # noqa: F401
)
