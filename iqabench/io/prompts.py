"""Prompt sets: built-ins shipped with the package and user files (.txt, .csv, .tsv, .jsonl).

Each prompt gets a stable id: ``<set>:<row index>`` for built-ins and files, so
caching and per-item tables line up across runs that use the same file.

Prompt files are read with a bound (64 MiB and 100,000 prompts unless
``IQABENCH_MAX_PROMPT_MB`` / ``IQABENCH_MAX_PROMPTS`` say otherwise):
``--prompts /dev/zero`` or a mistaken multi-gigabyte file would otherwise be
read until memory runs out.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..contracts.errors import UserInputError
from ..contracts.registry import unknown_name_message
from ..contracts.specs import env_positive_int
from .json_lines import json_lines

SMOKE_PROMPTS = [
    "a photo of a red apple on a wooden table",
    "a portrait of an old fisherman, dramatic lighting",
    "a mountain lake at sunrise, mist over the water",
    "a city street at night in the rain, neon reflections",
    "a bowl of ramen, top view, studio photo",
    "a golden retriever puppy running on the beach",
    "an astronaut riding a horse, oil painting",
    "a cozy living room with plants and a reading chair",
]

_COLUMN_CANDIDATES = ("prompt", "Prompt", "caption", "Caption", "text", "Text")


class PromptFileError(UserInputError):
    """A prompt file or set that cannot be read; the message says which and why."""


DEFAULT_MAX_PROMPT_MB = 64
DEFAULT_MAX_PROMPTS = 100_000
MAX_PROMPT_MB_ENV = "IQABENCH_MAX_PROMPT_MB"
MAX_PROMPTS_ENV = "IQABENCH_MAX_PROMPTS"


def _env_limit(name: str, default: int) -> int:
    return env_positive_int(name, default, PromptFileError)


def max_prompt_bytes() -> int:
    return _env_limit(MAX_PROMPT_MB_ENV, DEFAULT_MAX_PROMPT_MB) * 2**20


def max_prompts() -> int:
    return _env_limit(MAX_PROMPTS_ENV, DEFAULT_MAX_PROMPTS)


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str


def _builtin_partiprompts() -> list[str]:
    data = resources.files("iqabench").joinpath("data/PartiPrompts.tsv").read_text("utf-8")
    return [row["Prompt"] for row in csv.DictReader(io.StringIO(data), delimiter="\t") if row["Prompt"].strip()]


def _builtin_geneval() -> list[str]:
    data = resources.files("iqabench").joinpath("data/geneval_evaluation_metadata.jsonl").read_text("utf-8")
    return [json.loads(line)["prompt"] for line in data.splitlines() if line.strip()]


BUILTIN_SETS = {
    "smoke": ("8 varied prompts for quick checks", lambda: list(SMOKE_PROMPTS)),
    "parti": ("PartiPrompts, 1,632 prompts (google-research/parti, Apache-2.0)", _builtin_partiprompts),
    "geneval": ("GenEval's 553 prompts (djghosh13/geneval, MIT)", _builtin_geneval),
}


def load_prompts(source: str, *, limit: int | None = None, column: str | None = None) -> list[Prompt]:
    """A built-in set name or a path; ``limit`` keeps the first N prompts."""
    if limit is not None and limit < 1:
        raise PromptFileError("--limit must be at least 1")
    if source in BUILTIN_SETS:
        texts = BUILTIN_SETS[source][1]()
        prompts = [Prompt(f"{source}:{i}", t) for i, t in enumerate(texts)]
    else:
        path = Path(source)
        if not path.exists():
            if "/" not in source and "." not in source:
                raise PromptFileError(unknown_name_message("prompt set", source, BUILTIN_SETS).replace(
                    "iqabench list prompt sets", "iqabench list prompts"))
            raise PromptFileError(f"prompt file {source!r} does not exist")
        prompts = _read_prompt_file(path, column, limit)
    if limit is not None:
        prompts = prompts[:limit]
    return prompts


def _open_regular(path: Path) -> int:
    """A read descriptor of ``path``, refused unless it is a regular file: opened non-blocking so a FIFO (which
    would wait for a writer forever) or a device is refused at once, then checked on the open descriptor."""
    if path.is_dir():
        raise PromptFileError(f"prompt file {str(path)!r} is a folder; pass a .txt, .csv, .tsv or .jsonl file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise PromptFileError(f"prompt file {str(path)!r} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PromptFileError(f"prompt file {str(path)!r} is not a regular file (a pipe, device or socket); save the "
                              "prompts to a file and pass that")
    os.set_blocking(fd, True)
    return fd


def _read_prompt_file(path: Path, column: str | None, limit: int | None = None) -> list[Prompt]:
    limit_bytes = max_prompt_bytes()
    try:
        with os.fdopen(_open_regular(path), "rb") as handle:  # bounded read: a huge file stops at the limit
            raw = handle.read(limit_bytes + 1)
    except OSError as exc:
        raise PromptFileError(f"prompt file {str(path)!r} cannot be read ({exc.strerror or exc})") from None
    if len(raw) > limit_bytes:
        raise PromptFileError(
            f"prompt file {str(path)!r} is larger than the limit of {limit_bytes // 2**20} MiB; split it or raise "
            f"the limit with {MAX_PROMPT_MB_ENV}=<MiB>"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PromptFileError(
            f"prompt file {str(path)!r} is not valid UTF-8 (bad byte at line {line}); re-save it as UTF-8"
        ) from None
    suffix = path.suffix.lower()
    stem = path.name
    if suffix in (".csv", ".tsv"):
        texts = _read_table(text, "\t" if suffix == ".tsv" else ",", column, path)
    elif suffix == ".jsonl":
        texts = _read_jsonl(text, column, path)
    else:
        texts = [line.strip() for line in text.splitlines()]
        texts = [t for t in texts if t and not t.startswith("#")]
    texts = [t.strip() for t in texts]
    if not any(texts):
        raise PromptFileError(f"prompt file {str(path)!r} holds no prompts")
    if limit is not None:
        texts = texts[:limit]  # --limit N uses the first N prompts, so it lifts the prompt-count limit (documented)
    if len(texts) > max_prompts():
        raise PromptFileError(
            f"prompt file {str(path)!r} holds {len(texts):,} prompts, more than the limit of {max_prompts():,}; "
            f"use --limit, split the file, or raise the limit with {MAX_PROMPTS_ENV}={len(texts)}"
        )
    prompts = []
    for i, t in enumerate(texts):
        if not t:
            raise PromptFileError(f"prompt file {str(path)!r}: prompt {i + 1} is empty")
        prompts.append(Prompt(f"{stem}:{i}", t))
    return prompts


def _pick_column(fields: list[str], column: str | None, path: Path) -> str:
    if column:
        if column not in fields:
            raise PromptFileError(f"prompt file {str(path)!r} has no column {column!r} (columns: {', '.join(fields)})")
        return column
    for candidate in _COLUMN_CANDIDATES:
        if candidate in fields:
            return candidate
    raise PromptFileError(
        f"prompt file {str(path)!r} has no prompt column: expected one of {', '.join(_COLUMN_CANDIDATES[::2])} "
        f"(found {', '.join(fields) or 'no header'}); name it with --prompt-column"
    )


def _read_table(text: str, delimiter: str, column: str | None, path: Path) -> list[str]:
    """The prompt column of a CSV/TSV file, read strictly: an unbalanced quote (which the lenient reader lets
    swallow the rest of the file into one prompt) or a field over the csv module's limit is refused with the
    line where its record starts."""
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, strict=True)
    start = 1
    try:
        fields = [f for f in (reader.fieldnames or []) if f is not None]
        if not fields:
            raise PromptFileError(f"prompt file {str(path)!r} is empty")
        name = _pick_column(fields, column, path)
        texts = []
        start = reader.line_num + 1
        for row in reader:
            texts.append(row.get(name) or "")
            start = reader.line_num + 1
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise PromptFileError(f"prompt file {str(path)!r}, line {start}: a field is longer than "
                                  f"{csv.field_size_limit():,} characters; no prompt is that long (is a quote "
                                  "left open before it?)") from None
        if "unexpected end of data" in str(exc):
            why = "a quote opened here is never closed, so the rest of the file would be one prompt"
        else:
            why = f"not valid CSV ({exc})"
        raise PromptFileError(f"prompt file {str(path)!r}, line {start}: {why}; fix the quoting (a quote inside a "
                              "quoted field is written twice: \"\")") from None
    return texts


def _read_jsonl(text: str, column: str | None, path: Path) -> list[str]:
    def bad_line(number: int, reason: str) -> PromptFileError:
        return PromptFileError(f"prompt file {str(path)!r}, line {number}: not valid JSON ({reason})")

    texts = []
    for number, record in json_lines(text, bad_line):
        if not isinstance(record, dict):
            raise PromptFileError(f"prompt file {str(path)!r}, line {number}: expected a JSON object")
        name = _pick_column(list(record), column, path)
        value = record[name]
        if not isinstance(value, str):
            raise PromptFileError(f"prompt file {str(path)!r}, line {number}: {name!r} is not a string")
        texts.append(value)
    return texts
