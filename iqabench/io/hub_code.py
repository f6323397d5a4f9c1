"""No code from a cache runs unless the user says so: ``torch.hub.load`` and ``trust_remote_code`` are opt-in.

:mod:`.safe_load` makes every *checkpoint* read tensors-only, but some loaders import *code* from a cache:
``torch.hub.load('facebookresearch/dinov2:main', ...)`` (pyiqa's ``fid_dinov2``) imports ``hubconf.py`` from
``$TORCH_HOME/hub/facebookresearch_dinov2_main/``, so a file planted there runs when the metric is built; pyiqa's
Q-Align metrics call transformers with ``trust_remote_code=True``, which imports the model's Python files from
the Hugging Face cache. Following Hugging Face's ``trust_remote_code`` convention, these are refused unless the
user opts in with ``--trust-hub-code`` (``trust_hub_code=True`` in the API):

* :data:`CODE_LOADING_METRICS` marks the metrics known to load code (``iqabench list metrics`` shows the mark);
  :func:`refusal` is the sentence a run stops with before any work.
* :func:`install` replaces ``torch.hub.load`` process-wide by a guard that refuses unless :func:`trusted` is in
  force, so a metric or plugin not in the table cannot import a hub repo's code silently either.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..contracts.errors import UserError

OPT_IN_FLAG = "--trust-hub-code"

#: Metrics whose build imports code from a cache, and what it imports.
CODE_LOADING_METRICS = {
    "fid_dinov2": "torch.hub.load of facebookresearch/dinov2 (imports hubconf.py from torch hub's cache)",
    "qalign": "transformers trust_remote_code=True (imports q-future/one-align's Python files from the HF cache)",
    "qalign_4bit": "transformers trust_remote_code=True (imports q-future/one-align's Python files)",
    "qalign_8bit": "transformers trust_remote_code=True (imports q-future/one-align's Python files)",
    "compare2score": "transformers trust_remote_code=True (imports Compare2Score's Python files from the HF cache)",
}

_STATE = threading.local()
_LOCK = threading.Lock()
_ORIGINAL: dict[str, Any] = {}


class UntrustedCodeError(UserError, PermissionError):
    """Code from a cache was about to be imported without the user's opt-in; the message names the flag."""


def is_trusted() -> bool:
    return bool(getattr(_STATE, "trusted", False))


@contextmanager
def trusted(allow: bool) -> Iterator[None]:
    """Within the block, ``torch.hub.load`` may import hub code when ``allow`` (this thread only)."""
    before = is_trusted()
    _STATE.trusted = bool(allow)
    try:
        yield
    finally:
        _STATE.trusted = before


def refusal(metric: str) -> str | None:
    """The one sentence refusing ``metric`` without the opt-in, or None when it loads no code from a cache."""
    what = CODE_LOADING_METRICS.get(metric)
    if what is None:
        return None
    return (f"metric {metric!r} runs code from a cache when it is built ({what}); iqabench runs no cached code "
            f"unless you opt in: pass {OPT_IN_FLAG} (trust_hub_code=True in the API) if you trust that code")


def _guarded_hub_load(repo_or_dir: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
    if not is_trusted():
        raise UntrustedCodeError(
            f"torch.hub.load({repo_or_dir!r}, {model!r}) would import the repository's hubconf.py from torch hub's "
            f"cache; iqabench runs no cached code unless you opt in: pass {OPT_IN_FLAG} (trust_hub_code=True in "
            "the API) if you trust that code")
    return _ORIGINAL["torch.hub.load"](repo_or_dir, model, *args, **kwargs)


def install() -> None:
    """Replace ``torch.hub.load`` by the guard (idempotent); done wherever a metric or generator is built."""
    with _LOCK:
        import torch  # here, not at import: `list metrics` reads CODE_LOADING_METRICS without torch

        if "torch.hub.load" not in _ORIGINAL:
            _ORIGINAL["torch.hub.load"] = torch.hub.load
            torch.hub.load = _guarded_hub_load
