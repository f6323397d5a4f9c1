"""Comparisons whose two sides made the same pixels: flagged, never reported as a measured zero (issue 25).

A generator and its baseline can differ in their spec and still make byte-identical images: FLUX.1-schnell
ignores ``guidance_scale``, a wrapper may be a no-op at its setting. Their image keys differ (the specs do),
so only the pixels tell. RelGain would then print 0.00 [0.00, 0.00], which reads as "measured, no effect"
when nothing was compared. :func:`identical_pairs` compares the decoded pixels of every paired item (same
prompt id and seed) of a generator and its baseline; the runner notes every comparison that is identical
throughout, and benchmarks blank its numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PairCheck:
    """How many of a generator's items made the same pixels as its baseline's."""

    generator: str
    baseline: str
    n_pairs: int
    n_identical: int

    @property
    def all_identical(self) -> bool:
        return self.n_pairs > 0 and self.n_identical == self.n_pairs

    def sentence(self) -> str:
        return (f"{self.generator} and its baseline {self.baseline} made pixel-identical images for all "
                f"{self.n_pairs} paired item(s): what differs between the two specs has no effect on this pipeline, "
                "so there is no effect to measure and its numbers are left blank (not a measured 0); pass "
                "--baseline with a spec that changes the images")


def pixel_digest(path: Path) -> str | None:
    """SHA-256 of an image's mode, size and decoded pixels (None if the file is missing or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            data = f"{image.mode}{image.size}".encode() + image.tobytes()
    except (OSError, ValueError):
        return None
    return hashlib.sha256(data).hexdigest()


def identical_pairs(plan: Sequence[Any], keys: Sequence[str], baselines: Mapping[str, str | None],
                    path_of: Callable[[str], Path]) -> dict[str, PairCheck]:
    """generator -> :class:`PairCheck` against its baseline, over the planned items both sides made.

    ``plan`` holds :class:`~iqabench.benchmark.PlannedItem` (``.generator``, ``.item``) aligned with ``keys``.
    An item pairs with the baseline's item of the same prompt id and seed (a sweep's generator items carry
    params the baseline's do not); pairs missing an image on either side are not counted.
    """
    by_side: dict[str, dict[tuple[str, int], list[str]]] = {}
    for planned, key in zip(plan, keys, strict=True):
        by_side.setdefault(planned.generator, {}).setdefault((planned.item.prompt_id, int(planned.item.seed)),
                                                              []).append(key)
    digests: dict[str, str | None] = {}

    def digest(key: str) -> str | None:
        if key not in digests:
            digests[key] = pixel_digest(path_of(key))
        return digests[key]

    checks: dict[str, PairCheck] = {}
    for generator, baseline in baselines.items():
        if not baseline or baseline == generator or baseline not in by_side or generator not in by_side:
            continue
        n_pairs = n_same = 0
        for pair, gen_keys in by_side[generator].items():
            base_keys = by_side[baseline].get(pair)
            if not base_keys or (base := digest(base_keys[0])) is None:
                continue
            for key in gen_keys:
                if key == base_keys[0] or (own := digest(key)) is None:
                    continue
                n_pairs += 1
                n_same += own == base
        checks[generator] = PairCheck(generator, baseline, n_pairs, n_same)
    return checks
