"""`iqabench fetch` against a real HTTP server on 127.0.0.1 that speaks the hub's API (tests/hub_mirror/server.py).

Empty caches, the README's IQA-Adapter command, GenEval, fid-topk and ``train acpo``: ``fetch --list`` names every
file, ``fetch`` downloads exactly those (a variant and a safety checker the loader never reads stay on the
server), and the run (or the training) then succeeds with ``HF_HUB_OFFLINE=1`` without a single request.
Plain URLs: an interrupted download resumes with a Range request, a corrupted one is refused, a planted pickle
is never unpickled. Online, a run downloads on first use; an unreachable hub is reported in one sentence.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest
from hub_mirror.server import HubServer, serve
from test_fetch_preflight import ADAPTER_RUN, cli, empty_caches

SDXL = "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.fixture(scope="module")
def mirror(hub_mirror):
    return hub_mirror.ensure("hf", "adapters", "pyiqa:topiq_nr", "pyiqa:laion_aes")


#: The served files' sha256, shared by every test's server (the mirror's files do not change within a session).
_HASHES: dict[Path, str] = {}
#: The benchmarks' CLIP in these tests: ViT-B-32/openai, a third of the default ViT-L-14, on the same loader path.
SMALL_CLIP = ["--option", "clip_arch=ViT-B-32"]


def _state(mirror) -> HubServer:
    """Everything the mirror holds now, served: its hub repos and its plain files (pyiqa, torch hub, CLIP, adapters)."""
    state = HubServer(_hashes=_HASHES)
    state.add_hf_cache(mirror.root / "hf" / "hub")
    state.add_plain(mirror.root / "torch" / "hub" / "pyiqa", mirror.root / "torch" / "hub" / "checkpoints",
                    mirror.root / "home" / ".cache" / "clip", mirror.root / "iqa-adapter")
    unet = next(p for n, p in state.repos[SDXL].files().items() if n.startswith("unet/") and n.endswith(".safetensors"))
    state.repos[SDXL].extra.update({"unet/diffusion_pytorch_model.fp16.safetensors": unet,
                                    "safety_checker/model.safetensors": unet,
                                    **{name: unet for name in DECOYS}})
    return state


#: Other frameworks' copies of the weights, as the real SD XL repo holds them next to the PyTorch ones (10 GB each
#: there): no diffusers loader reads them, so fetch neither lists nor downloads them.
DECOYS = ("unet/diffusion_flax_model.msgpack", "unet/model.onnx", "unet/model.onnx_data", "unet/openvino_model.xml",
          "unet/openvino_model.bin", "text_encoder/tf_model.h5", "text_encoder/flax_model.msgpack",
          "vae_decoder/model.onnx", "sd_xl_base_1.0.ckpt", "text_encoder_2/saved_model.pb")


@pytest.fixture
def hub(mirror, tmp_path):
    with serve(_state(mirror)) as running:
        yield running


@pytest.fixture
def benchmark_hub(mirror):
    """The server with the benchmarks' files too: torch-fidelity's Inception, torchvision's Mask R-CNN (``torch``)
    and open_clip ViT-B-32/openai (``clip:ViT-B-32``), as GenEval and fid-topk load them."""
    mirror.ensure("torch", "clip:ViT-B-32")
    with serve(_state(mirror)) as running:
        yield running


def _cached_files(caches: Path) -> set[str]:
    """Every file a loader can read under the caches: hub snapshots, torch hub, CLIP, the adapter folder."""
    roots = [*caches.glob("hf/hub/models--*/snapshots"), caches / "torch", caches / "home" / ".cache" / "clip",
             caches / "iqa-adapter"]
    return {str(p) for root in roots for p in root.rglob("*") if p.is_file()}


def test_fetch_lists_then_downloads_exactly_what_the_offline_run_loads(hub, tmp_path):
    caches = tmp_path / "caches"
    env = empty_caches(caches, HF_ENDPOINT=hub.url, IQABENCH_URL_MIRROR=hub.url)
    fetch_args = ["fetch", *ADAPTER_RUN, "--limit", "1"]
    before = cli(env, *fetch_args, "--list", "--json", cwd=tmp_path)
    assert before.returncode == 0, before.stderr[-3000:]
    listed = [json.loads(line) for line in before.stdout.splitlines()]
    assert not _cached_files(caches), "--list downloaded something"
    assert not any(r["present"] for r in listed)
    names = {r["name"] for r in listed}
    assert {"iqa_adapter_topiq_nr.safetensors", "model_index.json", "unet/diffusion_pytorch_model.safetensors",
            "model.safetensors", "cfanet_nr_koniq_res50-9a73138b.pth", "ViT-L-14.pt"} <= names
    assert not {"unet/diffusion_pytorch_model.fp16.safetensors", "safety_checker/model.safetensors"} & names
    assert not set(DECOYS) & names

    fetched = cli(env, *fetch_args, cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    after = cli(env, *fetch_args, "--list", "--json", cwd=tmp_path)
    rows = [json.loads(line) for line in after.stdout.splitlines()]
    assert all(r["present"] for r in rows) and len(rows) == len(listed)
    assert {str(Path(r["destination"])) for r in rows} == _cached_files(caches)  # none missing, none extra
    assert not any("fp16" in p or "safety_checker" in p for p in hub.requested("GET"))
    assert not any(p.endswith(DECOYS) for p in hub.requested("GET")), "another framework's weights were downloaded"

    # an interrupted download (text_encoder_2 has no weights yet) is missing, and fetch completes it alone
    [weights] = caches.glob("hf/hub/models--stabilityai--stable-diffusion-xl-base-1.0/snapshots/*/text_encoder_2/"
                            "model*.safetensors")
    weights.unlink()
    partial = [json.loads(line) for line in cli(env, *fetch_args, "--list", "--json", cwd=tmp_path).stdout.splitlines()]
    assert [r for r in partial if r["name"] == f"text_encoder_2/{weights.name}" and not r["present"]]
    hub.requests.clear()
    resumed = cli(env, *fetch_args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert weights.is_file()
    assert [p for p in hub.requested("GET") if p.endswith(".safetensors")] == [
        p for p in hub.requested("GET") if p.endswith(f"text_encoder_2/{weights.name}")]

    offline = {**env, "HF_HUB_OFFLINE": "1", "IQABENCH_OFFLINE": "1"}
    hub.requests.clear()
    out = tmp_path / "out"
    run = cli(offline, "run", *ADAPTER_RUN, "--limit", "1", "--seeds", "0", "--batch-size", "1", "--device", "cpu",
              "--dtype", "fp32", "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    [manifest] = out.glob("runs/*/run.json")
    assert json.loads(manifest.read_text())["status"] == "complete"
    assert hub.requests == [], "the offline run touched the network"


def _listed(env: dict[str, str], args: list[str], cwd: Path) -> list[dict]:
    listed = cli(env, "fetch", *args, "--list", "--json", cwd=cwd)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert not (cwd / "iqabench_out").exists(), "fetch made a store or run folder"  # planning only
    return [json.loads(line) for line in listed.stdout.splitlines()]


def _cached_names(caches: Path) -> set[str]:
    """The cached files as ``--list`` names them: a hub file by its path in the repository, any other by its name."""
    return {"/".join(Path(p).parts[Path(p).parts.index("snapshots") + 2:]) if "snapshots" in Path(p).parts
            else Path(p).name for p in _cached_files(caches)}


def _fetch_exactly_what_is_listed(env: dict[str, str], args: list[str], caches: Path, cwd: Path, *,
                                  relist: bool = False) -> set[str]:
    """``fetch --list`` (online: every missing file sized by its server) downloads nothing; ``fetch`` then brings
    exactly the listed files into the caches, none missing, none extra; returns the names listed. ``relist``:
    list again and compare full paths (one more process). Files the user provides (a reference set) stay put."""
    before = _listed(env, args, cwd)
    assert not _cached_files(caches), "--list downloaded something"
    cached_rows = [r for r in before if str(caches) in r["destination"]]
    assert cached_rows and not any(r["present"] for r in cached_rows)
    assert all(r["size"] for r in cached_rows), "a missing file was listed without its size"
    fetched = cli(env, "fetch", *args, cwd=cwd)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert _cached_names(caches) == {r["name"] for r in cached_rows}
    if relist:
        after = _listed(env, args, cwd)
        assert all(r["present"] for r in after) and len(after) == len(before)
        assert {r["destination"] for r in after if str(caches) in r["destination"]} == _cached_files(caches)
        sizes = sorted((r["name"], r["size"]) for r in after)
        assert sizes == sorted((r["name"], r["size"]) for r in before)  # the sizes announced are the sizes
    return {r["name"] for r in before}


def _run_offline_to_completion(env: dict[str, str], args: list[str], cwd: Path, server) -> Path:
    """``iqabench run`` offline after a fetch: exit 0, run.json ``complete``, and not one request to the server."""
    server.requests.clear()
    out = cwd / "out"
    run = cli(_offline(env), "run", *args, "--out", str(out), cwd=cwd)
    assert run.returncode == 0, run.stderr[-3000:]
    assert server.requests == [], "the offline run touched the network"
    [manifest] = out.glob("runs/*/run.json")
    assert json.loads(manifest.read_text())["status"] == "complete"
    return manifest


def _offline(env: dict[str, str]) -> dict[str, str]:
    return {**env, "HF_HUB_OFFLINE": "1", "IQABENCH_OFFLINE": "1"}


def _images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i}.png")
        Image.new("RGB", (64, 64), (40 * i + 30, 200 - 50 * i, 90)).save(paths[-1])
    return paths


def test_fetch_then_offline_geneval_with_a_detector_that_runs_here(benchmark_hub, tmp_path):
    """GenEval with torchvision's Mask R-CNN (detector=maskrcnn; the official Mask2Former needs mmdetection, see the
    next test): fetch brings the detector and CLIP, the run then judges offline on the real loaders."""
    caches = tmp_path / "caches"
    env = empty_caches(caches, HF_ENDPOINT=benchmark_hub.url, IQABENCH_URL_MIRROR=benchmark_hub.url)
    prompt = {"tag": "single_object", "include": [{"class": "car", "count": 1}], "prompt": "a photo of a car"}
    (tmp_path / "geneval.jsonl").write_text(json.dumps(prompt) + "\n")
    args = ["geneval", "--generator", "tiny-sd[steps=1]", "--prompts", "geneval.jsonl", "--option",
            "images_per_prompt=1", "--option", "detector=maskrcnn", *SMALL_CLIP]
    names = _fetch_exactly_what_is_listed(env, args, caches, tmp_path)
    assert names == {"maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", "open_clip_model.safetensors"}
    manifest = _run_offline_to_completion(env, args, tmp_path, benchmark_hub)
    per_image = (manifest.parent / "results" / "geneval_per_image.csv").read_text()
    assert "single_object" in per_image


def test_fetch_for_the_official_geneval_detector_names_what_it_cannot_fetch(benchmark_hub, tmp_path):
    """The official detector: mmdetection is a package (pip, by hand) and its Mask2Former checkpoint a URL of
    download.openmmlab.com (not on the test server, so its download fails in one sentence); fetch exits 2."""
    if __import__("importlib").util.find_spec("mmdet") is not None:
        pytest.skip("mmdetection is installed here: the test needs it absent")
    caches = tmp_path / "caches"
    env = empty_caches(caches, HF_ENDPOINT=benchmark_hub.url, IQABENCH_URL_MIRROR=benchmark_hub.url)
    args = ["geneval", "--generator", "tiny-sd", "--limit", "1", *SMALL_CLIP]
    rows = {r["name"]: r for r in _listed(env, args, tmp_path)}
    assert rows["mmdet"]["source"].startswith("pip install mmdet") and not rows["mmdet"]["present"]
    mask2former = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"
    assert rows[mask2former]["source"].startswith("https://download.openmmlab.com/")
    fetched = cli(env, "fetch", *args, cwd=tmp_path)
    assert fetched.returncode == 2
    text = " ".join(fetched.stderr.split())
    assert "by hand: mmdetection" in text and "HTTP 404" in text and "Traceback" not in text
    assert {Path(p).name for p in _cached_files(caches)} == {"open_clip_model.safetensors"}  # the rest still came


def test_fetch_then_offline_fid_topk(benchmark_hub, tmp_path):
    """fid-topk: torch-fidelity's Inception and CLIP are fetched; the reference set is the user's (listed, present)."""
    caches = tmp_path / "caches"
    env = empty_caches(caches, HF_ENDPOINT=benchmark_hub.url, IQABENCH_URL_MIRROR=benchmark_hub.url)
    _images(tmp_path / "ref", 2)
    (tmp_path / "ref.csv").write_text("caption,image\na red car,ref/0.png\na blue bench,ref/1.png\n")
    args = ["fid-topk", "--generator", "tiny-sd[steps=1]", "--metrics", "piqe", "--option", "reference=ref.csv",
            "--option", "topk=50", "--option", "isc_splits=1", "--option", "kid_subsets=2", "--option",
            "kid_subset_size=2", "--option", "allow_small_topk=true", *SMALL_CLIP]
    names = _fetch_exactly_what_is_listed(env, args, caches, tmp_path)
    assert names == {"weights-inception-2015-12-05-6726825d.pth", "open_clip_model.safetensors", "ref.csv"}
    manifest = _run_offline_to_completion(env, args, tmp_path, benchmark_hub)
    assert "weights-inception-2015-12-05-6726825d.pth" in (manifest.parent / "results" / "result.json").read_text()


def test_fetch_then_offline_train_acpo(hub, tmp_path):
    """`iqabench fetch train acpo` takes the training command's own arguments (--data/--out may be left out) and
    brings the base pipeline (the files from_pretrained reads) and the evaluator's weights; the training then
    runs offline. Before the fetch, the training itself names every missing piece in one table."""
    caches = tmp_path / "caches"
    env = empty_caches(caches, HF_ENDPOINT=hub.url, IQABENCH_URL_MIRROR=hub.url)
    _images(tmp_path / "data", 2)
    selection = ["--base", "sd14", "--evaluator", "topiq_nr"]
    train = ["train", "acpo", "--data", "data", "--out", "lora", *selection, "--max-steps", "1", "--resolution",
             "64", "--rollout-steps", "2", "--t-max", "20", "--save-every", "1"]
    refused = cli(_offline(env), *train, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-3000:]
    text = "".join(refused.stderr.split())
    assert "3piece(s)thisrunneedsaremissing" in text and "iqabenchfetchtrainacpo--datadata--outlora" in text
    assert not (tmp_path / "lora").exists()

    names = _fetch_exactly_what_is_listed(env, ["train", "acpo", *selection], caches, tmp_path, relist=True)
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "cfanet_nr_koniq_res50-9a73138b.pth", "model.safetensors"} <= names
    assert not any(n.startswith("safety_checker/") for n in names)  # iqabench never loads SD 1.x's checker
    hub.requests.clear()
    trained = cli(_offline(env), *train, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "use it as acpo:lora" in trained.stdout
    assert hub.requests == [], "the offline training touched the network"


def test_fetch_train_iqa_adapter_lists_the_base_pipeline_and_refuses_unknown_commands(hub, tmp_path):
    env = empty_caches(tmp_path / "caches", HF_ENDPOINT=hub.url, IQABENCH_URL_MIRROR=hub.url)
    rows = _listed(env, ["train", "iqa-adapter", "--base", "sdxl"], tmp_path)
    assert {r["source"] for r in rows} == {SDXL}
    assert "unet/diffusion_pytorch_model.safetensors" in {r["name"] for r in rows}
    assert not any("fp16" in r["name"] or "safety_checker" in r["name"] for r in rows)
    unknown = cli(env, "fetch", "train", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "known: acpo, ipce, iqa-adapter, two-stream" in " ".join(unknown.stderr.split())


def test_an_online_run_downloads_on_first_use_and_says_what(hub, tmp_path):
    env = empty_caches(tmp_path / "caches", HF_ENDPOINT=hub.url, IQABENCH_URL_MIRROR=hub.url)
    out = tmp_path / "out"
    run = cli(env, "run", "scores", "--generator", "tiny-sd[steps=1]", "--metrics", "topiq_nr", "--limit", "1",
              "--batch-size", "1", "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"first use: downloading 2 missing file\(s\), \d+\.\d MB", " ".join(run.stderr.split()))
    assert json.loads(next(out.glob("runs/*/run.json")).read_text())["status"] == "complete"


def test_an_unreachable_hub_is_one_sentence_without_retries(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = empty_caches(tmp_path / "caches", HF_ENDPOINT=dead, IQABENCH_URL_MIRROR=dead)
    started = time.monotonic()
    run = cli(env, "run", "scores", "--generator", "tiny-sd[steps=1]", "--metrics", "topiq_nr", "--limit", "1",
              "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert run.returncode == 2
    text = " ".join(run.stderr.split())
    assert f"{dead} is unreachable" in text and text.count("is unreachable") == 1
    assert "Retrying" not in run.stderr and "Traceback" not in run.stderr
    assert time.monotonic() - started < 120  # imports dominate; no retry back-off


# -- plain URLs: resume, corruption, planted pickles ------------------------------------------------------------
def _named_by_hash(folder: Path, stem: str, data: bytes) -> Path:
    path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.safetensors"
    path.write_bytes(data)
    return path


@pytest.fixture
def plain(tmp_path, monkeypatch):
    files = tmp_path / "served"
    files.mkdir()
    state = HubServer()
    with serve(state) as running:
        monkeypatch.setenv("IQABENCH_URL_MIRROR", running.url)
        yield running, files


def test_an_interrupted_download_resumes_where_it_stopped(plain, tmp_path):
    from iqabench.engine.fetch import FetchError, download_url

    state, files = plain
    data = bytes(range(256)) * 400
    served = _named_by_hash(files, "weights", data)
    state.add_plain(files)
    state.truncate[served.name] = 30_000
    target = tmp_path / "cache" / served.name
    url = f"https://example.org/models/{served.name}"
    with pytest.raises(FetchError, match="30000.*run the same command again to resume"):
        download_url(url, target)
    assert not target.exists() and target.with_name(target.name + ".incomplete").stat().st_size == 30_000
    download_url(url, target)
    assert target.read_bytes() == data
    assert [r for m, _, r in state.requests if m == "GET"] == [None, "bytes=30000-"]


def test_a_corrupted_download_is_refused_and_deleted(plain, tmp_path):
    """The server publishes the file's sha256 (as the hub does) but the bytes that arrive differ."""
    from iqabench.engine.fetch import FetchError, download_url

    state, files = plain
    (files / "weights.safetensors").write_bytes(b"what was published" * 100)
    state.add_plain(files)
    state.override["weights.safetensors"] = b"what arrived instead" * 100
    target = tmp_path / "cache" / "weights.safetensors"
    with pytest.raises(FetchError, match="is corrupted"):
        download_url("https://example.org/weights.safetensors", target)
    assert not target.exists() and not target.with_name(target.name + ".incomplete").exists()


def test_a_torch_hub_name_whose_hash_does_not_match_is_refused(plain, tmp_path):
    """Without a published checksum, the sha256 prefix in a torch hub file name is checked (as check_hash does)."""
    from iqabench.engine.fetch import FetchError, download_url

    state, files = plain
    (files / "weights-deadbeef.npz").write_bytes(b"anything" * 100)  # not an LFS name: no checksum published
    state.add_plain(files)
    target = tmp_path / "cache" / "weights-deadbeef.npz"
    with pytest.raises(FetchError, match="is corrupted"):
        download_url("https://download.pytorch.org/models/weights-deadbeef.npz", target)
    assert not target.exists()


def test_a_planted_pickle_on_the_server_is_never_unpickled(plain, tmp_path):
    from hub_mirror.planted import plant

    from iqabench.engine.fetch import FetchError, download_url

    state, files = plain
    marker = tmp_path / "pwned"
    plant(files / "model.pth", marker)
    state.add_plain(files)
    target = tmp_path / "cache" / "model.pth"
    with pytest.raises(FetchError, match="nothing was loaded"):
        download_url("https://example.org/model.pth", target)
    assert not marker.exists() and not target.exists()
    assert target.with_name("model.pth.refused").is_file()


def test_fetch_sends_the_users_token_for_gated_repositories(hub, tmp_path):
    """SD 3.5 and FLUX.1-dev are gated: every hub request of `fetch`, model_index.json included, carries the token."""
    caches = tmp_path / "caches"
    env = empty_caches(caches, HF_ENDPOINT=hub.url, IQABENCH_URL_MIRROR=hub.url, HF_TOKEN="hf_gated_test")
    seen = len(hub.authorization)  # the server may be shared with other tests: only this command's requests
    listed = cli(env, "fetch", *ADAPTER_RUN, "--limit", "1", "--list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    index = [auth for path, auth in hub.authorization[seen:] if path.endswith("/model_index.json")]
    assert index and all(auth == "Bearer hf_gated_test" for auth in index), hub.authorization


def test_a_plain_url_download_shows_its_progress(plain, tmp_path, monkeypatch):
    import tqdm.auto

    from iqabench.contracts.needs import Need
    from iqabench.engine.fetch import fetch

    state, files = plain
    data = bytes(range(256)) * 400
    served = _named_by_hash(files, "weights", data)
    state.add_plain(files)
    counted: list[int] = []

    class Bar:
        def __init__(self, **kwargs):
            assert kwargs["total"] == len(data) and kwargs["unit"] == "B"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            counted.append(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    target = tmp_path / "cache" / served.name
    need = Need("weights", target, "url", f"https://example.org/models/{served.name}", False, size=len(data))
    assert fetch([need], log=lambda _: None) == []
    assert target.read_bytes() == data and sum(counted) == len(data)
