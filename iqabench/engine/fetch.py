"""Download the files a run needs into the caches its loaders read, resumably, verified, nothing unpickled.

* Hub repos go through ``huggingface_hub`` (``HF_ENDPOINT``, its ``.incomplete`` resume and cache layout):
  a pipeline is ``snapshot_download(allow_patterns=...)`` restricted to the files ``from_pretrained`` reads
  (:func:`iqabench.adapters.hub_cache.loaded_files`), one file is ``hf_hub_download``; LFS files are checked
  against the sha256 the hub publishes.
* Plain URLs (pyiqa's release files, torch hub / torchvision, OpenAI CLIP, torch-fidelity, GenEval's detector)
  land where pyiqa's ``load_file_from_url`` and ``torch.hub.load_state_dict_from_url`` look. Their helpers
  neither resume nor (pyiqa's) verify, so the download here does both: a ``<name>.incomplete`` file continued
  with an HTTP ``Range`` request, its size checked against ``Content-Length`` and its sha256 against the
  prefix torch hub's naming puts in the file name (``name-<sha256[:8]>.pth``), as ``check_hash`` does.
* The IQA-Adapter release is a Google Drive folder: ``gdown`` when installed.
* ``$IQABENCH_URL_MIRROR`` (``http://host:port``) sends every plain URL (and the Drive release, as
  ``/gdrive/<file>``) to a mirror: a cluster's proxy, or the tests' local server.

Every file that arrives is checked with :func:`iqabench.io.safe_load.check_file` (which reads no pickle): a file
that would need unpickling is moved aside and reported, never left where a loader would read it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..contracts.errors import EnvironmentProblem
from ..contracts.needs import Need

MIRROR_ENV = "IQABENCH_URL_MIRROR"
PROBE_TIMEOUT_S = 3.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")  # torch.hub's HASH_REGEX convention
CHUNK = 1 << 20
#: Libraries whose exceptions mean "the server or the network said no" (one sentence, not a traceback).
_NETWORK_MODULES = ("huggingface_hub", "httpx", "requests", "urllib3")


class FetchError(EnvironmentProblem):
    """A download that failed or was refused; the message is one sentence naming the file and why.

    The network's or the server's answer, not a bug: the CLI boundary prints it as that sentence (it is still a
    ``RuntimeError`` for callers that catch one)."""


@dataclass(frozen=True)
class FileRow:
    """One file of the ``--list`` table."""

    what: str
    name: str
    size: int | None
    destination: Path
    source: str
    present: bool


# -- where a URL is fetched from ---------------------------------------------------------------------------------
def mirrored(url: str) -> str:
    """``url`` through ``$IQABENCH_URL_MIRROR`` when set (``https://host/p`` -> ``<mirror>/host/p``)."""
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    if not mirror or url.startswith(hub_endpoint() + "/"):
        return url  # hub URLs (pyiqa's weights live in a hub repo) already follow HF_ENDPOINT
    parsed = urlparse(url)
    return f"{mirror}/{parsed.netloc}{parsed.path}"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def unreachable(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """One short probe of the hub (or ``url``): None when it answers, else the reason in a few words.

    Done once per command, so an offline machine is told at once instead of waiting through each library's
    retries (pyiqa and huggingface_hub each back off for minutes).
    """
    target = url or hub_endpoint()
    request = urllib.request.Request(target, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - http(s) only, user-configured
            return None
    except urllib.error.HTTPError:
        return None  # it answered (a 404 or 405 on the root still means the network is there)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{target} is unreachable ({reason})"


# -- plain URLs --------------------------------------------------------------------------------------------------
def expected_hash_prefix(url: str) -> str | None:
    """The sha256 prefix torch hub's file naming carries (``resnet50-0676ba61.pth``), if any."""
    match = _HASH_IN_NAME.search(os.path.basename(urlparse(url).path))
    return match.group(1) if match else None


def download_url(url: str, destination: Path, *, sha256: str | None = None,
                 progress: Callable[[int], None] = lambda _: None) -> Path:
    """Download ``url`` to ``destination``, resuming ``destination.incomplete``; verify; never unpickle.

    Refuses (deleting the partial file) a body whose size differs from what the server announced or whose
    sha256 does not match ``sha256`` or the prefix in the URL's file name.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    sha256 = sha256 or published_sha256(url)
    partial = destination.with_name(destination.name + ".incomplete")
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(mirrored(url), headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already whole
            response = None
        else:
            raise FetchError(f"{url} answered HTTP {exc.code} ({exc.reason})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{url} could not be downloaded ({getattr(exc, 'reason', exc)})") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            total = response.headers.get("Content-Length")
            expected = (int(total) + (have if resumed else 0)) if total is not None else None
            with open(partial, "ab" if resumed else "wb") as handle:
                try:
                    while block := response.read(CHUNK):
                        handle.write(block)
                        progress(len(block))
                except (http.client.IncompleteRead, OSError) as exc:
                    if isinstance(exc, http.client.IncompleteRead):
                        handle.write(exc.partial)  # what did arrive is kept: the next run resumes after it
                    raise FetchError(f"{url} was interrupted after {handle.tell()} bytes; run the same command "
                                     "again to resume") from None
        size = partial.stat().st_size
        if expected is not None and size != expected:
            raise FetchError(f"{url} stopped at {size} of {expected} bytes; run the same command again to resume")
    _verify(partial, url, sha256)
    os.replace(partial, destination)
    refuse_unsafe(destination)
    return destination


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # the hub's checksum is on the redirect itself
        return None


def published_sha256(url: str) -> str | None:
    """The sha256 the server publishes for ``url`` (the hub's ``X-Linked-Etag`` of an LFS file), if any.

    pyiqa's weights live in a hub repository: this is how their checksum is known. A server that publishes
    none (torch hub, OpenAI) leaves the check to the hash the URL itself carries.
    """
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        response = opener.open(urllib.request.Request(mirrored(url), method="HEAD"), timeout=30)
        headers = response.headers
        response.close()
    except urllib.error.HTTPError as exc:  # a 302 lands here with its headers
        headers = exc.headers
    except (urllib.error.URLError, OSError):
        return None
    tag = (headers.get("X-Linked-Etag") or "").strip('"').removeprefix("W/").strip('"')
    return tag if re.fullmatch(r"[0-9a-f]{64}", tag) else None


def url_sha256(url: str) -> str | None:
    """The checksum a URL carries: OpenAI's CLIP URLs hold the full sha256 as a folder (the ``clip`` package
    checks it), torch hub names hold a prefix (``resnet50-0676ba61.pth``, what ``check_hash`` compares)."""
    parts = urlparse(url).path.split("/")
    if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]{64}", parts[-2]):
        return parts[-2]
    return expected_hash_prefix(url)


def _verify(path: Path, url: str, sha256: str | None) -> None:
    want = sha256 or url_sha256(url)
    if not want:
        return
    digest = file_sha256(path)
    if not digest.startswith(want.lower()):
        path.unlink()
        raise FetchError(f"{os.path.basename(urlparse(url).path)} from {url} is corrupted (sha256 {digest[:12]}... "
                         f"does not match the published {want[:12]}...); it was deleted: run the command again")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_unsafe(path: Path) -> None:
    """A downloaded file that would need unpickling is moved to ``<name>.refused`` and reported (never loaded)."""
    from ..io.safe_load import check_file

    reason = check_file(path)
    if reason is not None:
        aside = path.with_name(path.name + ".refused")
        os.replace(path, aside)
        raise FetchError(f"{reason}; the download was moved to {aside} and nothing was loaded")


# -- the Hugging Face hub --------------------------------------------------------------------------------------
def _repo_files(repo_id: str, revision: str | None) -> dict[str, tuple[int | None, str | None]]:
    """path -> (size, sha256 of LFS files) of a hub repo, from its model info (one API call)."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=hub_endpoint()).model_info(repo_id, revision=revision, files_metadata=True)
    return {s.rfilename: (s.size, s.lfs.sha256 if s.lfs else None) for s in info.siblings or []}


def snapshot_plan(need: Need) -> dict[str, tuple[int | None, str | None]]:
    """The files of a hub pipeline ``from_pretrained`` reads, with sizes and published sha256 (asks the hub)."""
    import json

    from ..io.hub_files import loaded_files

    files = _repo_files(need.source, need.revision)
    url = f"{hub_endpoint()}/{need.source}/resolve/{need.revision or 'main'}/model_index.json"
    from huggingface_hub.utils import build_hf_headers

    # the user's token, as huggingface_hub sends it: gated repositories (SD 3.5, FLUX.1-dev) answer 401 without it
    request = urllib.request.Request(url, headers=build_hf_headers())
    try:  # read, not cached: `fetch --list` downloads nothing
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            model_index = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"{need.source}'s model_index.json could not be read from {url} ({exc})") from None
    return {f: files[f] for f in loaded_files(model_index, sorted(files), need.variant)}


def fetch_snapshot(need: Need, log: Callable[[str], None]) -> None:
    from huggingface_hub import snapshot_download

    from ..io.hub_files import hub_cache_dir

    plan = snapshot_plan(need)
    total = sum(size or 0 for size, _ in plan.values())
    log(f"{need.source}: {len(plan)} files, {human_size(total)}")
    folder = Path(snapshot_download(need.source, revision=need.revision, allow_patterns=sorted(plan),
                                    cache_dir=hub_cache_dir(), endpoint=hub_endpoint()))
    for name, (_, sha) in plan.items():
        _check_hub_file(folder / name, sha, f"{need.source}/{name}")


def fetch_hub_file(need: Need, log: Callable[[str], None]) -> None:
    from huggingface_hub import hf_hub_download

    from ..io.hub_files import hub_cache_dir

    assert need.filename is not None
    meta = _repo_files(need.source, need.revision).get(need.filename, (None, None))
    log(f"{need.source}/{need.filename}: {human_size(meta[0])}")
    path = Path(hf_hub_download(need.source, need.filename, revision=need.revision, cache_dir=hub_cache_dir(),
                                endpoint=hub_endpoint()))
    _check_hub_file(path, meta[1], f"{need.source}/{need.filename}")


def _check_hub_file(path: Path, sha256: str | None, label: str) -> None:
    real = path.resolve()
    if sha256 and file_sha256(real) != sha256:
        real.unlink()
        path.unlink(missing_ok=True)
        raise FetchError(f"{label} is corrupted (its sha256 does not match the hub's); it was deleted: run the "
                         "command again")
    if real.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        refuse_unsafe(real)


# -- the IQA-Adapter release (Google Drive) -------------------------------------------------------------------
def fetch_gdrive(need: Need, log: Callable[[str], None]) -> None:
    assert need.filename is not None
    names = need.files or (need.filename,)
    if os.environ.get(MIRROR_ENV):  # a mirror of the release: /gdrive/<file name>
        for number, name in enumerate(names, 1):
            try:
                download_url(f"https://gdrive/{name}", need.destination.with_name(name), sha256=need.sha256)
                return
            except FetchError:
                if number == len(names):
                    raise
        return
    if not need.source.startswith("https://drive.google.com/"):
        raise FetchError(f"{need.what}: iqabench does not know the release's Google Drive folder; set "
                         f"$IQABENCH_ADAPTER_RELEASE to its URL (from {need.source}) or put {need.filename} in "
                         f"{need.destination.parent} by hand")
    try:
        import gdown
    except ImportError:
        raise FetchError(f"{need.what} is on Google Drive: `pip install iqabench[fetch]` (gdown) to fetch it, or put "
                         f"{need.filename} in {need.destination.parent} by hand") from None
    scratch = need.destination.parent / ".gdrive-incomplete"
    gdown.download_folder(need.source, output=str(scratch), quiet=False, resume=True)
    found = [p for name in names for p in scratch.rglob(name) if p.is_file()]
    if not found:
        raise FetchError(f"the release folder {need.source} has none of {', '.join(names)}; put the file in "
                         f"{need.destination.parent} by hand")
    target = need.destination.with_name(found[0].name)
    os.replace(found[0], target)
    refuse_unsafe(target)
    shutil.rmtree(scratch, ignore_errors=True)


# -- one entry point --------------------------------------------------------------------------------------------
def fetch(needs: list[Need], log: Callable[[str], None] = print) -> list[str]:
    """Download every missing, fetchable need; returns the one-sentence failures (empty: all done)."""
    failures = []
    for need in needs:
        if need.present or not need.fetchable:
            continue
        log(f"fetching {need.what}")
        try:
            if need.kind == "hub-snapshot":
                fetch_snapshot(need, log)
            elif need.kind == "hub-file":
                fetch_hub_file(need, log)
            elif need.kind == "url":
                from tqdm.auto import tqdm  # huggingface_hub's own progress bars; off when stderr is no terminal

                with tqdm(total=need.size, unit="B", unit_scale=True, desc=need.destination.name,
                          disable=None) as bar:
                    path = download_url(need.source, need.destination, sha256=need.sha256, progress=bar.update)
                log(f"{path.name}: {human_size(path.stat().st_size)} into {path.parent}")
            else:
                fetch_gdrive(need, log)
        except FetchError as exc:
            failures.append(str(exc))
        except Exception as exc:  # huggingface_hub's errors: one sentence per file, the others still come
            if type(exc).__module__.split(".")[0] not in _NETWORK_MODULES:
                raise
            failures.append(f"{need.what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return failures


def file_rows(needs: list[Need], *, online: bool) -> list[FileRow]:
    """Every file the needs stand for; a missing hub snapshot is expanded by asking the hub when ``online``."""
    rows = []
    for need in needs:
        if need.kind == "hub-snapshot" and need.present:
            rows += [FileRow(need.what, f, (need.destination / f).stat().st_size, need.destination / f,
                             need.source, True) for f in need.files]
        elif need.kind == "hub-snapshot" and online:
            rows += [FileRow(need.what, f, size, need.destination, need.source, False)
                     for f, (size, _) in snapshot_plan(need).items()]
        else:
            name = need.filename or need.destination.name
            size = need.size if need.present or not online else _remote_size(need)
            rows.append(FileRow(need.what, name, size, need.destination, need.source, need.present))
    return rows


def _remote_size(need: Need) -> int | None:
    """The size a missing file's server announces (hub listing, or a HEAD's length); None when it says none."""
    if need.size is not None or not need.fetchable:
        return need.size
    try:
        if need.kind == "hub-file" and need.filename:
            return _repo_files(need.source, need.revision).get(need.filename, (None, None))[0]
        if need.kind == "url":
            request = urllib.request.Request(mirrored(need.source), method="HEAD")
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http(s), user-configured
                length = response.headers.get("X-Linked-Size") or response.headers.get("Content-Length")
                return int(length) if length else None
    except (OSError, ValueError):  # a listing must not fail on one server's answer: the size stays unknown
        return None
    except Exception as exc:  # huggingface_hub's own errors likewise; anything else is a bug and shows
        if type(exc).__module__.split(".")[0] not in _NETWORK_MODULES:
            raise
        return None
    return None


def announced_size(needs: list[Need]) -> str:
    """``", 1.2 GB"``: what downloading ``needs`` will bring, as their servers announce it (a snapshot's listing,
    a HEAD's length); ``""`` when no server says. Asked once before a first-use download, so the run says how
    much it is about to fetch, as diffusers' and pyiqa's progress bars do."""
    try:
        rows = file_rows(needs, online=True)
    except FetchError:
        return ""  # the download itself will say what went wrong, in its own sentence
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in _NETWORK_MODULES:
            raise
        return ""
    known = [r.size for r in rows if r.size is not None]
    if not known:
        return ""
    return f", {human_size(sum(known))}" + (f" ({len(rows) - len(known)} of unknown size)"
                                            if len(known) < len(rows) else "")


def human_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover
