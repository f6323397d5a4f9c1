"""Comparisons whose two sides made the same pixels: flagged, never reported as a measured zero (issue 25).

A generator and its baseline can differ in their spec and still make byte-identical images: FLUX.1-schnell
ignores ``guidance_scale``, a wrapper may be a no-op at its setting (an IQA-Adapter at lambda = 0, guidance at
alpha = 0). Their image keys differ (the specs do), so only the pixels tell. RelGain would then print
0.00 [0.00, 0.00], which reads as "measured, no effect" when nothing was compared.

One mechanism for every comparing benchmark:

* :func:`identical_pairs` compares the decoded pixels of every paired item (same prompt id and seed) of a
  generator and the spec it is compared with; the runner notes every comparison with its baseline that is
  identical throughout (:meth:`PairCheck.sentence`);
* :class:`PixelDigests` counts identical pairs of any two image keys (scale-sweep's low and high target at one
  lambda), :func:`identical_sentence` says so in the same words;
* :func:`blank_rows` blanks the effect cells of those rows and marks them ``identical_to_baseline``
  (relgain, seed-consistency, condition-sweep, scale-sweep, adversarial-gradcam);
* the cross-run comparison (``iqabench report A B``) holds scores, not pixels: pairs whose every score is equal
  are left out with :func:`identical_scores_note`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: what every note about identical sides says about the numbers
NOT_A_ZERO = "there is no effect to measure and its numbers are left blank (not a measured 0)"
#: the column every comparing table carries, True on the rows blanked because both sides made the same pixels
FLAG = "identical_to_baseline"


def identical_sentence(sides: str, n_pairs: int, cause: str, remedy: str = "") -> str:
    """The one note for a comparison whose two sides made the same pixels: who, how many pairs, why, the fix."""
    return (f"{sides} made pixel-identical images for all {n_pairs} paired item(s): {cause}, so {NOT_A_ZERO}"
            + (f"; {remedy}" if remedy else ""))


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

    def sentence(self, remedy: str = "pass --baseline with a spec that changes the images") -> str:
        return identical_sentence(f"{self.generator} and its baseline {self.baseline}", self.n_pairs,
                                  "what differs between the two specs has no effect on this pipeline", remedy)


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


class PixelDigests:
    """Image key -> pixel digest, each file decoded once; counts identical pairs of keys."""

    def __init__(self, path_of: Callable[[str], Path]):
        self._path_of = path_of
        self._digests: dict[str, str | None] = {}

    def __call__(self, key: str) -> str | None:
        if key not in self._digests:
            self._digests[key] = pixel_digest(self._path_of(key))
        return self._digests[key]

    def count(self, pairs: Iterable[tuple[str, str]]) -> tuple[int, int]:
        """(pairs compared, pairs with the same pixels); a pair with an image missing is skipped.

        A pair of one key (two specs whose fingerprints coincide) is the same image on both sides: an identical
        pair, never skipped, else a run that slipped past the plan-time refusal would report a measured 0."""
        n_pairs = n_same = 0
        for left, right in pairs:
            if left == right:
                n_pairs += 1
                n_same += 1
                continue
            if (a := self(left)) is None or (b := self(right)) is None:
                continue
            n_pairs += 1
            n_same += a == b
        return n_pairs, n_same

    def all_identical(self, pairs: Iterable[tuple[str, str]]) -> tuple[bool, int]:
        """(every compared pair identical and at least one compared, number compared)."""
        n_pairs, n_same = self.count(pairs)
        return n_pairs > 0 and n_same == n_pairs, n_pairs


def identical_pairs(plan: Sequence[Any], keys: Sequence[str], baselines: Mapping[str, str | None],
                    path_of: Callable[[str], Path] | PixelDigests) -> dict[str, PairCheck]:
    """generator -> :class:`PairCheck` against its baseline, over the planned items both sides made.

    ``plan`` holds :class:`~iqabench.benchmark.PlannedItem` (``.generator``, ``.item``) aligned with ``keys``.
    An item pairs with the baseline's item of the same prompt id and seed (a sweep's generator items carry
    params the baseline's do not); pairs missing an image on either side are not counted.
    """
    by_side: dict[str, dict[tuple[str, int], list[str]]] = {}
    for planned, key in zip(plan, keys, strict=True):
        by_side.setdefault(planned.generator, {}).setdefault((planned.item.prompt_id, int(planned.item.seed)),
                                                              []).append(key)
    digests = path_of if isinstance(path_of, PixelDigests) else PixelDigests(path_of)
    checks: dict[str, PairCheck] = {}
    for generator, baseline in baselines.items():
        if not baseline or baseline == generator or baseline not in by_side or generator not in by_side:
            continue
        pairs = [(base_keys[0], key) for pair, gen_keys in by_side[generator].items()
                 if (base_keys := by_side[baseline].get(pair)) for key in gen_keys]
        checks[generator] = PairCheck(generator, baseline, *digests.count(pairs))
    return checks


def shared_key_pairs(plan: Sequence[Any], keys: Sequence[str], compared: Mapping[str, str]) -> dict[str, str]:
    """generator -> baseline, for every comparison whose paired items (same prompt id and seed) all have the same
    image key on both sides: two spellings of one model (``--baseline sd35[guidance_scale=4.5]`` for ``sd35``).

    Known once the keys are, before any image is made: the run is refused then, rather than comparing each
    image with itself. ``plan`` and ``keys`` are aligned as in :func:`identical_pairs`.
    """
    by_side: dict[str, dict[tuple[str, int], set[str]]] = {}
    for planned, key in zip(plan, keys, strict=True):
        by_side.setdefault(planned.generator, {}).setdefault((planned.item.prompt_id, int(planned.item.seed)),
                                                              set()).add(key)
    shared: dict[str, str] = {}
    for generator, baseline in compared.items():
        if baseline == generator or generator not in by_side or baseline not in by_side:
            continue
        pairs = [(base, gen) for pair, gen_keys in by_side[generator].items()
                 if (base_keys := by_side[baseline].get(pair)) for base in base_keys for gen in gen_keys]
        if pairs and all(base == gen for base, gen in pairs):
            shared[generator] = baseline
    return shared


def blank_rows(frame: pd.DataFrame, identical: Sequence[bool] | pd.Series, columns: Iterable[str]) -> pd.DataFrame:
    """``frame`` with ``columns`` blanked (NaN) on the rows whose two sides made the same pixels, and the
    :data:`FLAG` column saying which: a table never shows 0.00 [0.00, 0.00] for what was not compared."""
    import numpy as np

    out = frame.copy()
    mask = np.asarray(identical, dtype=bool)
    out[FLAG] = mask
    if mask.any():
        for column in columns:
            if column in out:
                out[column] = out[column].astype(float)
                out.loc[mask, column] = np.nan
    return out


def identical_scores_note(labels: Sequence[str]) -> str:
    """The cross-run comparison's footnote for pairs left out because every score was equal on both sides."""
    return ("Left out, identical images (every difference exactly 0: there is no effect to measure, not a "
            "measured 0): " + "; ".join(labels) + ".")
