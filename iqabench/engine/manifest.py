"""What a run's ``run.json`` records besides its results: the run id, package versions and the machine.

Kept apart from the stages so the report and ``list runs`` can read the same
fields the runner writes, and so a re-run of the same spec finds its folder.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import TYPE_CHECKING, Any

import torch

from ..contracts.specs import RunSpec
from ..execution.runtime import Runtime
from ..store.store import _SAFE_NAME, content_key
from .run_binding import RunIdInUseError

if TYPE_CHECKING:  # pragma: no cover
    from ..contracts.execution import Execution


#: The batch size every run id is hashed with. Run ids were hashed from the whole spec, batch size included,
#: before execution settings left it; 4 (the old default) keeps the ids of existing runs made with the default.
_RUN_ID_BATCH_SIZE = 4


def default_run_id(spec: RunSpec, execution: Execution | None = None) -> str:
    """Same spec -> same run id, so re-running a killed command resumes into the same folder.

    Hashes what the run computes (the spec) and the device it was asked to run on, never how fast it runs:
    batch size, ``--compile`` and the other fast paths resume the same folder. The hashed document keeps the
    shape it had when the spec carried device and batch size (device as given, batch size 4), so the run ids
    of existing specs are unchanged.
    """
    execution = execution if execution is not None else spec.execution_hint()
    document = {**spec.to_dict(), "device": execution.device, "batch_size": _RUN_ID_BATCH_SIZE}
    return f"{spec.benchmark}-{content_key('run/v1', document)[:10]}"


def check_run_id_name(run_id: str) -> str:
    """A user-given run id: non-empty and path-safe (a folder name under ``runs/``), or one sentence saying so."""
    if not isinstance(run_id, str) or not _SAFE_NAME.match(run_id):
        raise RunIdInUseError(f"--run-id {run_id!r} is not allowed as a run id: give 1 to 128 letters, digits, '.', "
                              "'_' or '-', starting with a letter or digit (it names the folder runs/<id>)")
    return run_id


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for package in ("iqabench", "torch", "diffusers", "transformers", "pyiqa", "accelerate", "peft", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def environment(runtime: Runtime) -> dict[str, Any]:
    env = {"platform": platform.platform(), "device": runtime.device, "device_type": runtime.device_type,
           "dtype": runtime.dtype,
           "batch_size": runtime.batch_size, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if runtime.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    from ..execution.fast_paths import FastPaths

    env["fast_paths"] = FastPaths.from_runtime(runtime).describe()  # not in image keys: recorded here
    return env


def run_manifest(run_id: str, spec: RunSpec, status: str, runtime: Runtime, generators: dict[str, Any],
                 metric_fingerprints: dict[str, str], plan: dict[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    """The ``run.json`` document: spec, status, versions, machine, generator fingerprints and baselines.

    ``runtime`` holds the resolved device type and dtype the keys were planned with, and the runner adds
    ``execution`` (how it ran) and ``planned`` (every planned item with its image key,
    :func:`iqabench.engine.planning.planned_records`): readers such as ``iqabench study export`` take the keys from
    here instead of re-planning on a machine whose ``auto`` dtype would give other keys.
    """
    data = {
        "run_id": run_id, "benchmark": spec.benchmark, "status": status,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.to_dict(), "runtime": runtime.describe(), "versions": versions(),
        "environment": environment(runtime),
        "generators": generators,
        "metrics": metric_fingerprints,
    }
    if plan is not None:
        data["plan"] = plan
    data.update(extra)
    return data

