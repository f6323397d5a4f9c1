"""No cached file is ever unpickled: a malicious pickle planted in each cache iqabench reads is refused in one
sentence naming the file, and the code in it never runs (its marker folder is never created)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from iqabench.io import safe_load

sys.path.insert(0, str(Path(__file__).parent))
from hub_mirror.planted import Planted, plant  # noqa: E402
from hub_mirror.pyiqa_cache import MirrorDirs, use_mirror  # noqa: E402


def assert_refused_in_one_sentence(text: str, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the planted pickle ran"
    assert path.name in text and "\n" not in text and ". " not in text.rstrip("."), text


@pytest.fixture
def caches(tmp_path):
    with use_mirror(MirrorDirs(tmp_path / "caches")) as dirs:
        yield dirs


def test_seam_is_installed_when_a_metric_is_built_not_at_import():
    code = ("import torch, iqabench; print(torch.load.__module__); from iqabench.metrics import build_metric; "
            "build_metric('piqe'); print(torch.load.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.stdout.split() == ["torch.serialization", "iqabench.io.safe_load"], done.stderr[-2000:]


def test_installing_the_seam_imports_no_clip_and_prints_no_warning():
    # `clip` imports pkg_resources, whose deprecation warning would become a CLI's first stderr line before `error:`.
    code = ("import sys, pyiqa, pyiqa.archs.clip_model; from iqabench.io import safe_load; safe_load.install(); "
            "print('clip' in sys.modules, pyiqa.archs.clip_model._download._iqabench_safe)")
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.stdout.split() == ["False", "True"], done.stderr[-2000:]
    assert done.stderr == ""


@pytest.mark.parametrize(("metric", "where", "file", "pyiqa_file"), [
    ("cnniqa", "pyiqa", "CNNIQA_koniq10k-e6f14c91.pth", None),      # pyiqa's weight cache
    ("lpips", "checkpoints", "alexnet-owt-7be5be79.pth",             # torch hub checkpoints (torchvision backbone)
     "LPIPS_v0.1_alex-df73285e.pth"),
    ("laion_aes", "clip", "ViT-L-14.pt", "sac%2Blogos%2Bava1-l14-linearMSE.pth"),  # OpenAI CLIP's cache
])
def test_planted_pickle_in_a_metric_cache_is_refused(caches, tmp_path, metric, where, file, pyiqa_file):
    from iqabench.metrics import MetricUnavailableError, build_metric

    folder = {"pyiqa": caches.pyiqa, "checkpoints": caches.checkpoints, "clip": caches.home / ".cache" / "clip"}
    marker = tmp_path / "pwned"
    path = plant(folder[where] / file, marker)
    if pyiqa_file:  # present, so the offline check passes and the backbone (read first) is reached
        (caches.pyiqa / pyiqa_file).parent.mkdir(parents=True, exist_ok=True)
        (caches.pyiqa / pyiqa_file).touch()
    with pytest.raises(MetricUnavailableError) as info:
        build_metric(metric)
    assert_refused_in_one_sentence(str(info.value), path, marker)


def test_planted_pickle_as_torch_fidelity_inception_is_refused(caches, tmp_path):
    from iqabench.benchmarks.fid_topk.features import InceptionFeatures, default_inception_path

    marker = tmp_path / "pwned"
    path = plant(default_inception_path(), marker)
    assert str(caches.torch_home) in str(path)
    with pytest.raises(safe_load.UnsafeCheckpointError) as info:
        InceptionFeatures(weights="pretrained")
    assert_refused_in_one_sentence(str(info.value), path, marker)
    # torch-fidelity's own loader asks for weights_only=False; the seam overrides it.
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    safe_load.install()
    with pytest.raises(safe_load.UnsafeCheckpointError):
        FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    assert not marker.exists()


def test_planted_pickle_in_the_adapter_dir_is_refused(tmp_path, monkeypatch):
    from iqabench.adapters.iqa_adapter.checkpoint import CheckpointError, preset_file, read_checkpoint

    monkeypatch.setenv("IQABENCH_ADAPTER_DIR", str(tmp_path / "adapters"))
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "adapters" / "iqa_adapter_topiq_nr.bin", marker)
    safe_load.install()
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(preset_file("topiq"))
    assert_refused_in_one_sentence(str(info.value), path, marker)


def test_planted_pickle_in_an_acpo_lora_folder_is_refused(tmp_path):
    from iqabench.adapters.acpo.lora import LORA_FILE, load_lora
    from iqabench.support.tiny_models import tiny_sd_pipeline

    marker = tmp_path / "pwned"
    path = plant(tmp_path / "lora" / LORA_FILE, marker)  # a torch pickle under the safetensors name
    with pytest.raises(safe_load.UnsafeCheckpointError) as info:
        load_lora(tiny_sd_pipeline(0).unet, path.parent)
    assert_refused_in_one_sentence(str(info.value), path, marker)


def test_plain_tensor_checkpoints_still_load_whatever_the_caller_asked(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"params": {"w": torch.arange(3.0)}, "epoch": 3}, path)
    safe_load.install()
    loaded = torch.load(path, map_location="cpu", weights_only=False)  # pyiqa's call, now tensors only
    assert loaded["epoch"] == 3 and torch.equal(loaded["params"]["w"], torch.arange(3.0))
    evil = plant(tmp_path / "evil.pth", tmp_path / "pwned")
    for load in (torch.load, torch.serialization.load):
        with pytest.raises(safe_load.UnsafeCheckpointError):
            load(evil, map_location="cpu", weights_only=False)
    assert not (tmp_path / "pwned").exists()


class _Scripted(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.scale = 2.0

    def forward(self, x):
        return self.head(self.norm(self.conv(x)).mean(dim=(2, 3))) * self.scale


def test_torchscript_archive_gives_its_state_dict_without_running_code(tmp_path):
    """OpenAI CLIP ships TorchScript archives: the seam reads their parameters and buffers, never their code."""
    module = _Scripted().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    state = safe_load.read_torchscript_tensors(str(path))
    assert list(state) == list(module.state_dict())
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    safe_load.install()
    with pytest.raises(RuntimeError, match="does not run TorchScript"):
        torch.jit.load(str(path))
    with open(path, "rb") as handle:  # the CLIP loaders' fallback: torch.load on the open file
        assert list(torch.load(handle, map_location="cpu")) == list(module.state_dict())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_planted_pickle_is_not_reported_present(caches, tmp_path, zip_format):
    """`list metrics` / weight status: a planted cnniqa file is refused (checked without unpickling), not present."""
    from typer.testing import CliRunner

    from iqabench.cli import app
    from iqabench.metrics import pyiqa_weights_status

    marker = tmp_path / "pwned"
    path = caches.pyiqa / "CNNIQA_koniq10k-e6f14c91.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": {"w": torch.zeros(2)}, "payload": Planted(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    present, detail = pyiqa_weights_status("cnniqa")
    assert present is False and detail == safe_load.refusal(path), detail
    assert_refused_in_one_sentence(detail, path, marker)
    listing = CliRunner().invoke(app, ["list", "metrics"], env={"COLUMNS": "400"})
    assert listing.exit_code == 0, listing.output[-2000:]
    [row] = [line for line in listing.output.splitlines() if line.startswith("│ cnniqa ")]
    assert "present" not in row and "holds pickled objects" in row, row
    assert not marker.exists()
    # A plain-tensor file in its place is present again (the check is cached by path, mtime and size).
    torch.save({"params": {"w": torch.zeros(3)}}, path, _use_new_zipfile_serialization=zip_format)
    os.utime(path, ns=(1, 10**18))
    assert pyiqa_weights_status("cnniqa") == (True, path.name)


def _malicious_torchscript(path: Path, marker: Path) -> Path:
    """A real ``torch.jit.save`` archive whose ``data.pkl`` is swapped for a pickle that creates ``marker``."""
    import pickle
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    clean = path.with_name("clean.pt")
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(clean))
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("/data.pkl") and name.count("/") == 1:
                data = pickle.dumps(Planted(marker), protocol=2)
            target.writestr(name, data)
    clean.unlink()
    return path


def test_malicious_torchscript_as_openai_clip_is_refused(caches, tmp_path):
    """OpenAI CLIP files are TorchScript archives: one whose pickle carries code is refused by the status check,
    by building laion_aes, and by the seam itself (``torch.load`` on the path and on an open file, as clip does)."""
    from iqabench.metrics import MetricUnavailableError, build_metric, pyiqa_weights_status

    marker = tmp_path / "pwned"
    path = _malicious_torchscript(caches.home / ".cache" / "clip" / "ViT-L-14.pt", marker)
    (caches.pyiqa / "sac%2Blogos%2Bava1-l14-linearMSE.pth").parent.mkdir(parents=True, exist_ok=True)
    torch.save({"layers.0.weight": torch.zeros(2)}, caches.pyiqa / "sac%2Blogos%2Bava1-l14-linearMSE.pth")
    present, detail = pyiqa_weights_status("laion_aes")
    assert present is False
    assert_refused_in_one_sentence(detail, path, marker)
    with pytest.raises(MetricUnavailableError) as info:
        build_metric("laion_aes")
    assert_refused_in_one_sentence(str(info.value), path, marker)
    safe_load.install()
    with pytest.raises(safe_load.UnsafeCheckpointError) as direct:
        torch.load(path, map_location="cpu")
    assert_refused_in_one_sentence(str(direct.value), path, marker)
    with open(path, "rb") as handle, pytest.raises(safe_load.UnsafeCheckpointError):
        torch.load(handle, map_location="cpu")
    with pytest.raises(RuntimeError, match="does not run TorchScript"):
        torch.jit.load(str(path))
    assert not marker.exists()


def test_planted_pickle_as_a_timm_backbone_in_the_hf_cache_is_refused(caches, tmp_path):
    """topiq_nr's ResNet-50 comes from the Hugging Face snapshot of timm/resnet50.a1_in1k; timm accepts a
    ``pytorch_model.bin`` there when ``model.safetensors`` is absent. A planted one is refused, never unpickled."""
    import timm

    from iqabench.metrics import MetricUnavailableError, build_metric, pyiqa_weights_status

    repo_id = timm.models.get_pretrained_cfg("resnet50").hf_hub_id
    repo = caches.hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    marker = tmp_path / "pwned"
    path = plant(repo / "snapshots" / ("0" * 40) / "pytorch_model.bin", marker)
    caches.pyiqa.mkdir(parents=True)  # topiq's own file, plain tensors: only the backbone is at fault
    torch.save({"params": {"w": torch.zeros(2)}}, caches.pyiqa / "cfanet_nr_koniq_res50-9a73138b.pth")
    present, detail = pyiqa_weights_status("topiq_nr")
    assert present is False and str(path) in detail, detail
    with pytest.raises(MetricUnavailableError) as info:
        build_metric("topiq_nr")
    assert_refused_in_one_sentence(str(info.value), path, marker)
    safe_load.install()
    with pytest.raises(safe_load.UnsafeCheckpointError):  # the seam itself, as timm's fallback would read it
        torch.load(str(path), map_location="cpu", weights_only=False)
    assert not marker.exists()
