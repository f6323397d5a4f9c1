"""iqabench: quality-aware text-to-image generation and IQA robustness benchmarks.

The Python API mirrors the CLI: ``iqabench.run(RunSpec(...))`` does what
``iqabench run`` does. Register your own pieces with the decorators below.
"""

from importlib.metadata import PackageNotFoundError, version

from . import quiet  # noqa: F401  first: filters a dependency's import-time notice before diffusers/peft load
from .api import run
from .benchmark import BaseBenchmark, ImageRef, PlannedItem, Result, register_benchmark
from .generators import WorkItem, build_generator, register_generator
from .metrics import build_metric, register_metric
from .runner import Runner
from .runtime import Runtime
from .specs import GeneratorSpec, RunSpec
from .store import Store

try:
    __version__ = version("iqabench")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "BaseBenchmark", "GeneratorSpec", "ImageRef", "PlannedItem", "Result", "RunSpec", "Runner", "Runtime", "Store",
    "WorkItem", "build_generator", "build_metric", "register_benchmark", "register_generator", "register_metric",
    "run", "__version__",
]
