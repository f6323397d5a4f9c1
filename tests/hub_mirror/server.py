"""A local HTTP server on 127.0.0.1 speaking the Hugging Face hub's HTTP API, plus plain URLs, from mirror files.

``iqabench fetch`` is tested against it as against the real hub: huggingface_hub is pointed at it with
``HF_ENDPOINT`` and the plain URLs (pyiqa, torch hub, OpenAI CLIP, torch-fidelity, GenEval's detector, the
IQA-Adapter release) with ``IQABENCH_URL_MIRROR``. Only what ``hf_hub_download`` / ``snapshot_download`` /
``model_info`` call is served:

* ``GET /api/models/{repo}[/revision/{rev}]``: model info with ``sha`` and ``siblings`` (size, LFS sha256);
* ``GET /api/models/{repo}/tree/{rev}``: the file tree ``snapshot_download`` lists (one page);
* ``HEAD|GET /{repo}/resolve/{rev}/{file}``: ``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag`` (the sha256 of LFS
  files, as the hub), ``X-Linked-Size``, ``Content-Length`` and ``Range`` (206) for resumed downloads;
* ``GET /<host>/<path>``: a plain file, looked up by its last path part among the mirror's non-hub files.

Bounded and loopback only: it binds 127.0.0.1 on a free port, serves files under the given roots, and records
every request (``requests``) so a test can assert what was asked. ``truncate`` makes the first GET of a file
stop after N bytes (an interrupted download); ``override`` serves other bytes under a name (a corrupted or
planted file).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Repo:
    repo_id: str
    folder: Path  # a snapshot folder (or any folder laid out as the repo)
    commit: str
    extra: dict[str, Path] = field(default_factory=dict)  # more files under these names (not loaded, say)

    def files(self) -> dict[str, Path]:
        found = {p.relative_to(self.folder).as_posix(): p for p in sorted(self.folder.rglob("*")) if p.is_file()}
        return {**found, **self.extra}


@dataclass
class HubServer:
    """The server's content and its log; ``url`` is ``http://127.0.0.1:<port>``."""

    repos: dict[str, Repo] = field(default_factory=dict)
    plain: dict[str, Path] = field(default_factory=dict)  # last path part -> file
    truncate: dict[str, int] = field(default_factory=dict)  # last path part -> bytes sent by the next GET
    override: dict[str, bytes] = field(default_factory=dict)  # last path part -> bytes served instead
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    authorization: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization header)
    url: str = ""
    _hashes: dict[Path, str] = field(default_factory=dict)

    def sha256(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = _sha256(path)
        return self._hashes[path]

    def add_hf_cache(self, cache: Path) -> None:
        """Serve every ``models--org--name/snapshots/<commit>`` of a Hugging Face cache as repo ``org/name``."""
        for repo_dir in sorted(Path(cache).glob("models--*")):
            for snapshot in sorted((repo_dir / "snapshots").glob("*")):
                repo_id = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
                self.repos[repo_id] = Repo(repo_id, snapshot, snapshot.name)

    def add_plain(self, *folders: Path) -> None:
        """Serve every file under ``folders`` at ``/<any host>/<any path>/<its name>``."""
        for folder in folders:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    self.plain[path.name] = path

    def requested(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.requests if method is None or m == method]


class _Handler(BaseHTTPRequestHandler):
    server_version = "iqabench-test-hub/1"
    state: HubServer

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- dispatch ----------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._route(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._route(body=True)

    def _route(self, *, body: bool) -> None:
        state = self.state
        state.requests.append((self.command, self.path, self.headers.get("Range")))
        state.authorization.append((self.path, self.headers.get("Authorization")))
        path = urlparse(self.path).path
        if path in ("", "/"):
            return self._send(200, b"", "text/plain", body=body)
        if path.startswith("/api/models/"):
            return self._api(path.removeprefix("/api/models/"), body)
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            revision, _, filename = rest.partition("/")
            return self._resolve(unquote(repo_id), unquote(revision), unquote(filename), body)
        return self._plain(path, body)

    # -- the hub API -------------------------------------------------------------------------------------------
    def _repo(self, text: str) -> tuple[Repo | None, str]:
        for repo_id, repo in self.state.repos.items():
            if text == repo_id or text.startswith(repo_id + "/"):
                return repo, text[len(repo_id):].lstrip("/")
        return None, ""

    def _api(self, rest: str, body: bool) -> None:
        repo, tail = self._repo(unquote(rest))
        if repo is None:
            return self._send(404, b'{"error":"Repository not found"}', "application/json", body=body,
                              headers={"X-Error-Code": "RepoNotFound"})
        if tail.startswith("tree/"):
            entries = [self._entry(name, path, tree=True) for name, path in repo.files().items()]
            return self._json(entries, body)
        siblings = [self._entry(name, path, tree=False) for name, path in repo.files().items()]
        return self._json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
                           "siblings": siblings}, body)

    def _entry(self, name: str, path: Path, *, tree: bool) -> dict:
        size = path.stat().st_size
        blob = hashlib.sha1(path.read_bytes()).hexdigest()
        lfs = None
        if name.endswith(LFS_SUFFIXES):
            sha = self.state.sha256(path)
            lfs = {"oid" if tree else "sha256": sha, "size": size, "pointerSize": 134}
        if tree:
            return {"type": "file", "path": name, "size": size, "oid": blob, **({"lfs": lfs} if lfs else {})}
        return {"rfilename": name, "size": size, "blobId": blob, **({"lfs": lfs} if lfs else {})}

    def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
        repo = self.state.repos.get(repo_id)
        last = filename.rsplit("/", 1)[-1]
        if repo is None and (last in self.state.plain or quote(last) in self.state.plain):
            # a file of a repo not mirrored whole (pyiqa's weights repo; pyiqa names files by the quoted URL part)
            return self._plain(last if last in self.state.plain else quote(last), body)
        path = repo.files().get(filename) if repo else None
        if repo is None or path is None:
            code = "RepoNotFound" if repo is None else "EntryNotFound"
            return self._send(404, b"", "text/plain", body=body, headers={"X-Error-Code": code})
        data = self.state.override.get(filename, None)
        content = data if data is not None else path.read_bytes()
        headers = {"X-Repo-Commit": repo.commit}
        if filename.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{self.state.sha256(path)}"'
            headers["X-Linked-Size"] = str(len(content))
        headers["ETag"] = f'"{hashlib.sha1(content).hexdigest()}"'
        self._send_content(content, filename.rsplit("/", 1)[-1], body, headers)

    # -- plain URLs ----------------------------------------------------------------------------------------------
    def _plain(self, path: str, body: bool) -> None:
        name = path.rsplit("/", 1)[-1]
        found = self.state.plain.get(name) or self.state.plain.get(unquote(name))
        data = self.state.override.get(name)
        if found is None and data is None:
            return self._send(404, b"not found", "text/plain", body=body)
        headers = {}
        if found is not None and name.endswith(LFS_SUFFIXES):  # published as the hub does for LFS files
            headers["X-Linked-Etag"] = f'"{self.state.sha256(found)}"'
        self._send_content(data if data is not None else found.read_bytes(), name, body, headers)

    # -- bytes ---------------------------------------------------------------------------------------------------
    def _send_content(self, content: bytes, name: str, body: bool, headers: dict[str, str]) -> None:
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start = int(wanted.removeprefix("bytes=").split("-")[0] or 0)
            if start >= len(content):
                return self._send(416, b"", "text/plain", body=body,
                                  headers={"Content-Range": f"bytes */{len(content)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        part = content[start:]
        headers["Accept-Ranges"] = "bytes"
        cut = self.state.truncate.pop(name, None) if body else None
        self._send(status, part, "application/octet-stream", body=body, headers=headers, cut=cut)

    def _json(self, obj, body: bool) -> None:
        self._send(200, json.dumps(obj).encode(), "application/json", body=body)

    def _send(self, status: int, data: bytes, kind: str, *, body: bool, headers: dict[str, str] | None = None,
              cut: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(data if cut is None else data[:cut])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True


@contextmanager
def serve(state: HubServer) -> Iterator[HubServer]:
    """Run the server on 127.0.0.1 (a free port) while the block runs; ``state.url`` is its address."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="test-hub", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
