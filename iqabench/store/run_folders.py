"""Reading what a run folder holds (run.json, result.json, result tables) defensively: bounded, shape-checked.

A run folder may come from another machine, an older version, a crash or a hostile hand. Before issue 26 a
run.json that was a JSON list crashed ``list runs`` with ``AttributeError``, deeply nested JSON with
``RecursionError``, a 2 GiB sparse result.json took 45 s to fail with ``JSONDecodeError``, and a malformed
CSV table crashed ``report`` with pandas' ``ParserError``. Every reader of run folders (``list runs``,
``report``, the comparison, the study kit, the run-id check) reads through here: a file over
:data:`MAX_JSON_BYTES`, nested deeper than :data:`MAX_JSON_DEPTH`, not UTF-8 JSON, or not a JSON object raises
:class:`RunFolderError`, one sentence naming the file, which the caller turns into one row marked unreadable
or one error line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..contracts.errors import UserInputError

#: run.json and result.json are a few kB to a few MB (result.json lists grids and estimates).
MAX_JSON_BYTES = 64 * 2**20
#: Far deeper than anything iqabench writes (run.json nests ~5 levels); well under Python's recursion limit.
MAX_JSON_DEPTH = 64
#: Result tables are per-item scores: large, but bounded.
MAX_TABLE_BYTES = 512 * 2**20


class RunFolderError(UserInputError):
    """A file of a run folder that cannot be read as what it should be; the message names the file and why."""


def _bounded_bytes(path: Path, limit: int) -> bytes:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunFolderError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunFolderError(f"{path} is not a regular file (a link, folder, device or pipe)")
    if info.st_size > limit:
        raise RunFolderError(f"{path} is {info.st_size:,} bytes, more than the {limit:,} a run folder's file may "
                             "hold; it is damaged or not iqabench's")
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise RunFolderError(f"{path} cannot be read ({exc.strerror or exc})") from None


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), computed without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def read_json_document(path: Path, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
                       top: type | tuple[type, ...] = dict) -> Any:
    """The JSON object in ``path`` (or a value of type ``top``); RunFolderError (one sentence naming the file)
    for anything else.

    FileNotFoundError passes through unchanged: callers treat an absent file as "not there yet".
    """
    raw = _bounded_bytes(path, max_bytes)
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RunFolderError(f"{path} is not UTF-8 text; it is damaged or not iqabench's") from None
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); it is damaged or not "
                             "iqabench's") from None
    except RecursionError:
        raise RunFolderError(f"{path} is nested too deeply to be iqabench's JSON") from None
    if not isinstance(document, top):
        raise RunFolderError(f"{path} holds a JSON {type(document).__name__}, not the "
                             f"{'object' if top is dict else 'value'} iqabench expects there; it is damaged or not "
                             "iqabench's")
    if json_depth(document) > max_depth:
        raise RunFolderError(f"{path} is nested more than {max_depth} levels deep; it is damaged or not iqabench's")
    return document


def typed_field(document: dict[str, Any], name: str, kind: type | tuple[type, ...], path: Path, default: Any = None
          ) -> Any:
    """``document[name]`` when it has the expected type, ``default`` when absent; RunFolderError otherwise."""
    value = document.get(name, default)
    if value is None or value is default:
        return default
    if isinstance(value, kind):
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    raise RunFolderError(f"{path}: {name!r} is a {type(value).__name__}, expected "
                         f"{' or '.join(k.__name__ for k in kinds)}; the file is damaged or not iqabench's")


def read_table(path: Path, *, max_bytes: int = MAX_TABLE_BYTES, **read_csv: Any):
    """A result table (CSV) as a DataFrame; RunFolderError naming the file when it is not a readable CSV.
    ``read_csv``: further pandas ``read_csv`` arguments (e.g. ``dtype``)."""
    import io

    import pandas as pd

    raw = _bounded_bytes(path, max_bytes)
    try:
        return pd.read_csv(io.BytesIO(raw), keep_default_na=True, **read_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).replace("Error tokenizing data. C error: ", "").split())[:200] or type(exc).__name__
        raise RunFolderError(f"{path} is not a readable CSV table ({reason}); it is damaged or not iqabench's"
                             ) from None


#: run.json fields readers use, with the type iqabench writes (spec fields one level down, as ``spec.<name>``).
RUN_JSON_FIELDS = {"spec": dict, "status": str, "metrics": dict, "generators": dict, "plan": dict, "updated": str}
RUN_SPEC_FIELDS = {"generators": list, "metrics": list, "seeds": list, "options": dict, "benchmark": str}


def read_run_manifest(path: Path) -> dict[str, Any]:
    """A run.json, bounded and with every field a reader uses of the type iqabench writes (RunFolderError
    naming the file and the field otherwise)."""
    return checked_run_manifest(read_json_document(path), path)


def checked_run_manifest(document: dict[str, Any], path: Path) -> dict[str, Any]:
    """``document`` (run.json's, already read) when every field a reader uses has the type iqabench writes."""
    for name, kind in RUN_JSON_FIELDS.items():
        typed_field(document, name, kind, path)
    spec = document.get("spec") or {}
    for name, kind in RUN_SPEC_FIELDS.items():
        typed_field(spec, name, kind, path)
    return document
