"""What a run's ``run.json`` records besides its results: the run id, package versions and the machine.

Kept apart from the stages so the report and ``list runs`` can read the same
fields the runner writes, and so a re-run of the same spec finds its folder.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Any

import torch

from .runtime import Runtime
from .specs import RunSpec
from .store import content_key


def default_run_id(spec: RunSpec) -> str:
    """Same spec -> same run id, so re-running a killed command resumes into the same folder."""
    return f"{spec.benchmark}-{content_key('run/v1', spec.to_dict())[:10]}"


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
    env = {"platform": platform.platform(), "device": runtime.device, "dtype": runtime.dtype,
           "batch_size": runtime.batch_size, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if runtime.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    from .fast_paths import FastPaths

    env["fast_paths"] = FastPaths.from_runtime(runtime).describe()  # not in image keys: recorded here
    return env


def run_manifest(run_id: str, spec: RunSpec, status: str, runtime: Runtime, generators: dict[str, Any],
                 metric_fingerprints: dict[str, str], plan: dict[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    """The ``run.json`` document: spec, status, versions, machine, generator fingerprints and baselines."""
    data = {
        "run_id": run_id, "benchmark": spec.benchmark, "status": status,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.to_dict(), "versions": versions(), "environment": environment(runtime),
        "generators": generators,
        "metrics": metric_fingerprints,
    }
    if plan is not None:
        data["plan"] = plan
    data.update(extra)
    return data

