"""First real use (issue 23): one preflight table naming every missing piece, `iqabench fetch` against a local
hub server, truthful run status, and fast metric listings.

The fetch tests start ``tests/hub_mirror/server.py`` (the Hugging Face hub's HTTP API plus plain URLs on
127.0.0.1) over the hub mirror's files and point an *empty* set of caches at it: what ``fetch`` downloads
there is exactly what the offline run then loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = "steps=2,height=64,width=64"
ADAPTER_RUN = ["relgain", "--generator", f"iqa-adapter:topiq[{SMALL}]", "--metrics", "topiq_nr,laion_aes"]


def empty_caches(root: Path, **extra: str) -> dict[str, str]:
    """An environment whose every cache is an empty folder under ``root`` (a fresh clone's first day)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "IQABENCH_OFFLINE",
                                                            "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(root / "hf"), HF_HUB_CACHE=str(root / "hf" / "hub"), TORCH_HOME=str(root / "torch"),
               IQABENCH_ADAPTER_DIR=str(root / "iqa-adapter"), HOME=str(root / "home"),
               XDG_CACHE_HOME=str(root / "home" / ".cache"), OMP_NUM_THREADS="1", COLUMNS="80", **extra)
    return env


def cli(env: dict[str, str], *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iqabench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# -- preflight -------------------------------------------------------------------------------------------------
def test_dry_run_names_all_six_missing_files_in_one_table_with_the_fetch_command(tmp_path):
    env = empty_caches(tmp_path / "caches", HF_HUB_OFFLINE="1")
    proc = cli(env, "run", *ADAPTER_RUN, "--dry-run", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    text = "".join(proc.stderr.split())  # the table folds long paths at 80 columns: compare without breaks
    assert "6piece(s)thisrunneedsaremissing" in text
    for name in ("iqa_adapter_topiq_nr.safetensors", "models--stabilityai--stable-diffusion-xl-base-1.0",
                 "timm--resnet50.a1_in1k", "cfanet_nr_koniq_res50-9a73138b.pth", "ViT-L-14.pt",
                 "sac%2Blogos%2Bava1-l14-linearMSE.pth"):
        assert name in text, name
    assert "iqabenchfetchrelgain--generator'iqa-adapter:topiq[steps=2,height=64,width=64]'--metricstopiq_nr," \
           "laion_aes" in text
    assert max(len(line) for line in proc.stderr.splitlines()) <= 80
    assert not (tmp_path / "out" / "runs").exists() or not list((tmp_path / "out" / "runs").glob("*/run.json"))


def test_geneval_refuses_before_generating_when_the_official_detector_is_missing(tmp_path):
    pytest.importorskip("open_clip")
    if __import__("importlib").util.find_spec("mmdet") is not None:
        pytest.skip("mmdetection is installed here: the test needs it absent")
    env = empty_caches(tmp_path / "caches", HF_HUB_OFFLINE="1")
    out = tmp_path / "out"
    proc = cli(env, "run", "geneval", "--generator", "tiny-sd", "--limit", "4", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    text = "".join(proc.stderr.split())
    assert "3piece(s)thisrunneedsaremissing" in text
    assert "mmdetection" in text and "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth" in text
    assert "open_clip_model.safetensors" in text and "mustbeprovidedbyhand" in text
    assert not list(out.glob("cache/images/*/*.png")), "images were generated before the refusal"


def test_the_preflight_builds_no_model(tmp_path, monkeypatch):
    """Planning with every file missing declares needs without constructing a pipeline or a metric."""
    from iqabench.contracts.specs import RunSpec
    from iqabench.engine.runner import Runner

    for key, value in empty_caches(tmp_path / "caches", HF_HUB_OFFLINE="1").items():
        if key.startswith(("HF_", "TORCH", "IQABENCH", "XDG")):
            monkeypatch.setenv(key, value)
    import diffusers
    import pyiqa

    built = []
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", lambda *a, **k: built.append(a))
    monkeypatch.setattr(pyiqa, "create_metric", lambda *a, **k: built.append(a))
    spec = RunSpec(benchmark="relgain", generators=[f"iqa-adapter:topiq[{SMALL}]"], metrics=["topiq_nr"],
                   prompts="smoke", seeds=[0], limit=1)
    runner = Runner(spec, tmp_path / "store", preflight=False)
    assert not built
    missing = {n.kind for n in runner.needs if not n.present}
    gdrive = "gdrive" if __import__("importlib").util.find_spec("gdown") else "manual"  # manual: without gdown
    assert missing == {gdrive, "hub-snapshot", "hub-file", "url"}


# -- run status ------------------------------------------------------------------------------------------------
def _failing_metric(name: str, exc: BaseException):
    from iqabench.metrics import register_metric

    @register_metric(name, lower_better=False, overwrite=True)
    def build(device):
        raise exc

    return name


@pytest.mark.parametrize(("exc", "status"), [(RuntimeError("boom"), "failed"), (KeyboardInterrupt(), "interrupted")])
def test_a_run_that_raises_or_is_interrupted_is_never_left_running(tmp_path, exc, status):
    from iqabench.api import run
    from iqabench.contracts.specs import RunSpec

    metric = _failing_metric(f"raising_{status}", exc)
    spec = RunSpec(benchmark="scores", generators=["tiny-sd[steps=1]"], metrics=[metric], prompts="smoke",
                   seeds=[0], limit=1)
    with pytest.raises(BaseException) as raised:
        run(spec, tmp_path / "out")
    assert isinstance(raised.value, type(exc)) or "boom" in str(raised.value)
    [manifest] = (tmp_path / "out" / "runs").glob("*/run.json")
    data = json.loads(manifest.read_text())
    assert data["status"] == status
    assert data["owner"]["pid"] == os.getpid()
    assert data["error"].startswith(type(exc).__name__ if status == "interrupted" else "MetricUnavailableError")


def test_list_runs_shows_a_run_whose_process_died_as_dead(tmp_path):
    import platform
    import time

    from iqabench.cli.listing import run_rows

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    runs = tmp_path / "runs"
    cases = {"same-host-dead": ({"pid": gone.pid, "host": platform.node()}, None),
             "same-host-alive": ({"pid": os.getpid(), "host": platform.node()}, None),
             "other-host-stale": ({"pid": 1, "host": "elsewhere"}, time.time() - 3600),
             "other-host-beating": ({"pid": 1, "host": "elsewhere"}, time.time())}
    for run_id, (owner, beat) in cases.items():
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "run.json").write_text(json.dumps({"status": "running", "owner": owner}))
        if beat is not None:
            (runs / run_id / "heartbeat").touch()
            os.utime(runs / run_id / "heartbeat", (beat, beat))
    status = {row["id"]: row["status"] for row in run_rows(tmp_path)}
    assert status["same-host-dead"].startswith(f"dead (process {gone.pid} is gone")
    assert status["same-host-alive"] == "running"
    assert status["other-host-stale"].startswith("dead (last heartbeat 60 min ago")
    assert status["other-host-beating"] == "running"


# -- listings ----------------------------------------------------------------------------------------------------
_NO_TORCH = """
import sys
from iqabench.cli.app import main
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in ("torch", "pyiqa", "diffusers", "timm") if m in sys.modules)
print("EXIT", code, "HEAVY", heavy, file=sys.stderr)
"""


def _in_process(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TORCH.format(args=args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_list_metrics_filters_wraps_at_80_columns_and_imports_no_model_code(tmp_path):
    env = empty_caches(tmp_path / "caches", HF_HUB_OFFLINE="1")
    proc = _in_process(["list", "metrics", "topiq_nr", "laion_aes", "psnr", "--missing", "--nr"], env, tmp_path)
    assert "EXIT 0 HEAVY []" in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    words = [line.replace("│", " ").split() for line in lines]
    names = [w[0] for w in words if w and w[0] in ("topiq_nr", "laion_aes", "psnr")]
    assert names == ["topiq_nr", "laion_aes"]  # psnr is FR (and needs no file)
    joined = "".join(proc.stdout.replace("│", " ").split())  # folded, never cut: each URL is there whole
    assert "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/cfanet_nr_koniq_res50-9a73138b.pth" \
        in joined
    fr = _in_process(["list", "metrics", "--fr"], env, tmp_path)
    rows = [line.replace("│", " ").split()[0] for line in fr.stdout.splitlines() if "FR," in line]
    assert "psnr" in rows and "topiq_nr" not in rows and "lpips" in rows


def test_unknown_metric_names_are_answered_without_importing_model_code(tmp_path):
    env = empty_caches(tmp_path / "caches", HF_HUB_OFFLINE="1")
    listing = _in_process(["list", "metrics", "topiq_mr"], env, tmp_path)
    assert "EXIT 2 HEAVY []" in listing.stderr and "Did you mean 'topiq_nr'" in listing.stderr
    run = _in_process(["run", "relgain", "--generator", "tiny-sd", "--metrics", "piqe,topiq_mr"], env, tmp_path)
    assert "EXIT 2 HEAVY []" in run.stderr and "Did you mean 'topiq_nr'" in run.stderr


def test_the_shipped_metric_file_table_matches_pyiqa_for_the_adapter_metrics():
    from iqabench import metric_catalog

    shipped = json.loads(metric_catalog.SHIPPED_TABLE.read_text())
    live = metric_catalog.generate(["topiq_nr", "laion_aes", "lpips", "piqe"])
    assert shipped["pyiqa"] == metric_catalog.pyiqa_version()
    for name, entry in live["metrics"].items():
        assert shipped["metrics"][name] == entry, name


def test_training_commands_declare_their_files_like_a_run(tmp_path, monkeypatch):
    """`train acpo/ipce/iqa-adapter` (and `fetch train ...`) read one list each, built by the same declarations a
    run's planning collects: the base generator's factory, the metric table, open_clip's file; a user's missing
    checkpoint is a missing piece of that list, not a second error later."""
    from iqabench.adapters.acpo.needs import acpo_needs, ipce_training_needs
    from iqabench.adapters.iqa_adapter.needs import adapter_training_needs

    for key, value in empty_caches(tmp_path / "caches", HF_HUB_OFFLINE="1").items():
        if key.startswith(("HF_", "TORCH", "IQABENCH", "XDG")):
            monkeypatch.setenv(key, value)
    acpo = acpo_needs("sd14", "topiq_nr")
    assert [(n.kind, n.source, n.present) for n in acpo] == [
        ("hub-snapshot", "CompVis/stable-diffusion-v1-4", False), ("hub-file", "timm/resnet50.a1_in1k", False),
        ("url", "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/cfanet_nr_koniq_res50-9a73138b.pth",
         False)]
    [checkpoint] = acpo_needs("tiny-sd", f"ipce:{tmp_path}/missing.safetensors")
    assert (checkpoint.kind, checkpoint.present) == ("manual", False) and "train ipce" in checkpoint.message
    [clip] = ipce_training_needs("ViT-B-32", "openai")
    assert (clip.kind, clip.source, clip.filename) == ("hub-file", "timm/vit_base_patch32_clip_224.openai",
                                                      "open_clip_model.safetensors")
    [init] = adapter_training_needs("tiny-sd", tmp_path / "adapter.safetensors")
    assert (init.kind, init.present) == ("manual", False)
    assert adapter_training_needs("tiny-sd") == []  # random weights built in-process: nothing to fetch
