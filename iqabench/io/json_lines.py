"""JSON Lines text (one JSON value per line; blank lines skipped), read with each value's line number."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any


def json_lines(text: str, bad_line: Callable[[int, str], Exception]) -> Iterator[tuple[int, Any]]:
    """(line number, value) for every non-blank line of ``text``, numbered from 1.

    A line that is not JSON raises ``bad_line(number, reason)`` (``reason`` is the decoder's message, e.g.
    "Expecting value"), without the decoder's traceback: each reader names its own file in its own words.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise bad_line(number, exc.msg) from None
        except RecursionError:  # "[[[[...": the decoder recurses once per level
            raise bad_line(number, "nested too deeply") from None
        yield number, value
