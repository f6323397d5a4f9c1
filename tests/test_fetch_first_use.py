"""Issue 23's first-real-use review: what `fetch` downloads and counts as present, what it declares, run status
under SIGTERM, the fetch hint, and the quick answers (fast tests; the server-side ones are in test_fetch_server)."""

from __future__ import annotations

import pytest

from iqabench.io.hub_files import loaded_files

SDXL_INDEX = {"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
              "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
              "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
              "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
              "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
#: The real SD XL base repo's layout (abridged): PyTorch weights next to Flax, ONNX and OpenVINO copies.
SDXL_FILES = ["model_index.json", "sd_xl_base_1.0.safetensors", "sd_xl_base_1.0_0.9vae.safetensors",
              "scheduler/scheduler_config.json",
              "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
              "text_encoder/flax_model.msgpack", "text_encoder/model.onnx", "text_encoder/openvino_model.bin",
              "text_encoder/openvino_model.xml", "text_encoder/tf_model.h5",
              "text_encoder_2/config.json", "text_encoder_2/model.safetensors", "text_encoder_2/model.onnx",
              "text_encoder_2/model.onnx_data", "text_encoder_2/openvino_model.bin",
              "text_encoder_2/openvino_model.xml",
              "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
              "tokenizer/vocab.json", "tokenizer_2/merges.txt", "tokenizer_2/special_tokens_map.json",
              "tokenizer_2/tokenizer_config.json", "tokenizer_2/vocab.json",
              "unet/config.json", "unet/diffusion_flax_model.msgpack", "unet/diffusion_pytorch_model.safetensors",
              "unet/diffusion_pytorch_model.fp16.safetensors", "unet/model.onnx", "unet/model.onnx_data",
              "unet/openvino_model.bin", "unet/openvino_model.xml",
              "vae/config.json", "vae/diffusion_flax_model.msgpack", "vae/diffusion_pytorch_model.safetensors",
              "vae_decoder/config.json", "vae_decoder/model.onnx", "vae_1_0/diffusion_pytorch_model.safetensors"]


def test_sdxl_fetch_selects_only_what_diffusers_reads():
    chosen = loaded_files(SDXL_INDEX, SDXL_FILES)
    assert sorted(chosen) == sorted([
        "model_index.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
        "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json", "tokenizer_2/merges.txt", "tokenizer_2/special_tokens_map.json",
        "tokenizer_2/tokenizer_config.json", "tokenizer_2/vocab.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors"])
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in loaded_files(SDXL_INDEX, SDXL_FILES, "fp16")


def test_a_bin_only_component_never_takes_openvinos_bin():
    index = {"text_encoder": ["transformers", "T5EncoderModel"]}
    files = ["text_encoder/config.json", "text_encoder/pytorch_model.bin", "text_encoder/openvino_model.bin",
             "text_encoder/spiece.model", "text_encoder/openvino_model.xml"]
    assert loaded_files(index, files) == ["text_encoder/config.json", "text_encoder/spiece.model",
                                          "text_encoder/pytorch_model.bin"]


def _pipeline_folder(root, files):
    import json

    root.mkdir()
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(SDXL_INDEX) if name == "model_index.json" else "{}")
    return root


def test_a_snapshot_interrupted_before_text_encoder_2s_weights_is_missing(tmp_path):
    from adapters.hub_cache import find_weights

    complete = loaded_files(SDXL_INDEX, SDXL_FILES)
    location, _ = find_weights("x/y", path=str(_pipeline_folder(tmp_path / "whole", complete)))
    assert location is not None
    partial = [f for f in complete if f != "text_encoder_2/model.safetensors"]
    location, detail = find_weights("x/y", path=str(_pipeline_folder(tmp_path / "partial", partial)))
    assert location is None and "text_encoder_2 weights" in detail
    no_vocab = [f for f in complete if f != "tokenizer_2/vocab.json"]
    location, detail = find_weights("x/y", path=str(_pipeline_folder(tmp_path / "vocab", no_vocab)))
    assert location is None and "tokenizer_2 tokenizer files" in detail


def test_guidance_declares_its_metric_and_its_tiny_decoder(tmp_path, monkeypatch, hub_mirror):
    from iqabench.contracts.generators import WeightsMissingError, build_generator
    from iqabench.contracts.needs import collecting
    from iqabench.execution.runtime import Runtime

    runtime = Runtime(device="cpu", dtype="fp32", batch_size=1)
    spec = "guidance:topiq_nr[base=tiny-sd,decoder=tiny,tiny_decoder=madebyollin/taesd]"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with collecting() as needs:
        generator = build_generator(spec, runtime)
    assert generator.tiny_decoder_files is None  # missing: declared, the preflight refuses the run
    names = {(n.filename or n.destination.name) for n in needs}
    assert any(name.startswith("cfanet_nr_koniq_res50") for name in names), names  # the guiding metric's file
    decoder = [n for n in needs if n.source == "madebyollin/taesd"]
    assert sorted(n.filename for n in decoder) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert all(n.kind == "hub-file" and n.fetchable and not n.present for n in decoder)

    hub_mirror.ensure("hf", "tiny-decoders")
    monkeypatch.setenv("HF_HUB_CACHE", hub_mirror.env["HF_HUB_CACHE"])
    with collecting() as needs:
        generator = build_generator(spec, runtime)
    assert [n.present for n in needs if n.source == "madebyollin/taesd"] == [True, True]
    assert generator.tiny_decoder_files.folder == needs[-1].destination.parent
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    from adapters.guidance.tiny_decoder import find_tiny_decoder

    with pytest.raises(WeightsMissingError, match="madebyollin/taesd is not in the Hugging Face cache.*iqabench fetch"):
        find_tiny_decoder("madebyollin/taesd", "test")


def test_a_live_pid_with_a_stale_heartbeat_is_a_reused_pid_not_a_running_run(tmp_path):
    import os
    import platform
    import time

    from iqabench.engine.run_status import HEARTBEAT_FILE, STALE_AFTER_S, liveness

    data = {"status": "running", "owner": {"pid": os.getpid(), "host": platform.node()}}  # this pid is alive
    (tmp_path / HEARTBEAT_FILE).touch()
    assert liveness(data, tmp_path) == "running"
    old = time.time() - STALE_AFTER_S - 600
    os.utime(tmp_path / HEARTBEAT_FILE, (old, old))
    assert liveness(data, tmp_path).startswith(f"dead (process {os.getpid()} has not beaten for 15 min")


_SLOW_RUN = """
import sys, time
from pathlib import Path
from iqabench.api import run
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import register_metric

@register_metric("slow_for_sigterm", lower_better=False, overwrite=True)
def build(device):
    Path(sys.argv[2]).touch()  # the run has begun: the parent sends SIGTERM now
    time.sleep(120)

spec = RunSpec(benchmark="scores", generators=["tiny-sd[steps=1]"], metrics=["slow_for_sigterm"], prompts="smoke",
               seeds=[0], limit=1)
run(spec, sys.argv[1])
"""


def test_sigterm_during_a_run_marks_it_interrupted(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from iqabench.engine.run_status import sigterm_interrupts

    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(tmp_path / "out"), str(marker)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()[1][-3000:] if proc.poll() is not None else "never started"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Terminated" in stderr  # raised as an interrupt, not the silent default death
    [manifest] = (tmp_path / "out" / "runs").glob("*/run.json")
    data = json.loads(manifest.read_text())
    assert data["status"] == "interrupted" and data["error"].startswith("Terminated: SIGTERM")

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_interrupts():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


@pytest.mark.parametrize("flag", ["--overwrite", "--trust-hub-code", "--compile", "--out=elsewhere"])
def test_the_fetch_hint_keeps_the_benchmark_after_any_flag_of_run(flag):
    from iqabench.cli.fetch import fetch_hint, value_less_options
    from iqabench.cli.run import run_command

    flags = value_less_options(run_command)  # read from the run command, not a hand list
    assert {"--overwrite", "--trust-hub-code", "--dry-run", "--offline"} <= flags
    argv = ["iqabench", "run", flag, "relgain", "--generator", "sdxl", "--out", "o", "--metrics", "piqe"]
    assert fetch_hint(argv, flags) == "iqabench fetch relgain --generator sdxl --metrics piqe"


def test_the_adapter_release_defaults_to_the_readmes_folder_and_says_when_gdown_is_missing(tmp_path, monkeypatch):
    import importlib.util

    from adapters.iqa_adapter import checkpoint

    monkeypatch.delenv(checkpoint.RELEASE_ENV, raising=False)
    monkeypatch.delenv("IQABENCH_URL_MIRROR", raising=False)
    real = importlib.util.find_spec
    for gdown in (True, False):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, gdown=gdown: (object() if gdown else None) if name == "gdown"
                            else real(name, *a))
        need = checkpoint._release_need("topiq", tmp_path / "iqa_adapter_topiq_nr.safetensors", False)
        assert need.source.startswith("https://drive.google.com/drive/folders/1jVYM96nbk0pUV4HSHiUzWGlTSLg-dv5h")
        assert need.fetchable is gdown
        if not gdown:
            assert need.kind == "manual" and "pip install iqabench[fetch]" in need.source
    monkeypatch.setenv("IQABENCH_URL_MIRROR", "http://127.0.0.1:1")  # a mirror of the release needs no gdown
    assert checkpoint._release_need("topiq", tmp_path / "x.safetensors", False).kind == "gdrive"


def test_fetch_answers_a_metric_typo_at_once_and_says_when_nothing_is_needed(tmp_path):
    from test_fetch_preflight import _in_process, cli, empty_caches

    env = empty_caches(tmp_path / "caches", HF_HUB_OFFLINE="1")
    typo = _in_process(["fetch", "relgain", "--generator", "tiny-sd", "--metrics", "topiq_nrr", "--list"], env,
                       tmp_path)
    text = " ".join(typo.stderr.split())
    assert "EXIT 2 HEAVY []" in text, text[-2000:]  # answered before torch, pyiqa or diffusers is imported
    assert "topiq_nrr" in text and "topiq_nr" in text.replace("topiq_nrr", "")  # the close match is suggested
    for extra in ([], ["--list"]):
        none = cli(env, "fetch", "scores", "--generator", "tiny-sd", "--metrics", "entropy", *extra, cwd=tmp_path)
        assert none.returncode == 0, none.stderr[-2000:]
        assert "this command needs no downloaded files" in none.stdout
        assert "all 0" not in none.stdout


@pytest.mark.parametrize("value", ["1", "ON", "on", "True", "yes"])
def test_hf_hub_offline_truthy_values_count_as_offline(value, monkeypatch):
    from iqabench.metrics import offline_mode

    monkeypatch.delenv("IQABENCH_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not offline_mode()
