"""iqabench: quality-aware text-to-image generation and IQA robustness benchmarks.

The Python API mirrors the CLI: ``iqabench.run(RunSpec(...))`` does what
``iqabench run`` does. Register your own pieces with the decorators below.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from .support import quiet  # noqa: F401  first: filters a dependency's import-time notice before diffusers/peft load
from .support.lazy import lazy_exports

# The public names load on first use (PEP 562): ``import iqabench`` (and so ``iqabench --help``) must not pay
# for torch, diffusers and pyiqa; ``iqabench.run`` etc. import them when touched.
_LAZY = {  # public name -> the module it lives in (one module per line or two)
    "run": ".api",
    "BaseBenchmark": ".benchmark", "ImageRef": ".benchmark", "PlannedItem": ".benchmark", "Result": ".benchmark",
    "register_benchmark": ".benchmark",
    "WorkItem": ".contracts.generators", "build_generator": ".contracts.generators",
    "register_generator": ".contracts.generators",
    "build_metric": ".metrics", "register_metric": ".metrics",
    "Runner": ".engine.runner", "Runtime": ".execution.runtime",
    "GeneratorSpec": ".contracts.specs", "RunSpec": ".contracts.specs",
    "Store": ".store.store", "Execution": ".contracts.execution",
}

if TYPE_CHECKING:  # pragma: no cover
    from .api import run
    from .benchmark import BaseBenchmark, ImageRef, PlannedItem, Result, register_benchmark
    from .contracts.execution import Execution
    from .contracts.generators import WorkItem, build_generator, register_generator
    from .contracts.specs import GeneratorSpec, RunSpec
    from .engine.runner import Runner
    from .execution.runtime import Runtime
    from .metrics import build_metric, register_metric
    from .store.store import Store


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


try:
    __version__ = version("iqabench")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "BaseBenchmark", "Execution", "GeneratorSpec", "ImageRef", "PlannedItem", "Result", "RunSpec", "Runner",
    "Runtime", "Store", "WorkItem", "build_generator", "build_metric", "register_benchmark", "register_generator",
    "register_metric", "run", "__version__",
]
