"""GenEval's scoring rules as pure functions on detections (no model in here).

Reproduces ``evaluation/evaluate_images.py`` and ``summary_scores.py`` of the
official GenEval repository (djghosh13/geneval, MIT; Ghosh et al., NeurIPS
2023 Datasets & Benchmarks), rule for rule, so that numbers can be
cross-checked with the official scripts:

* per class keep detections with confidence *strictly* above 0.3 (0.9 when the
  prompt's task is ``counting``), most confident first, at most 16, then an
  optional greedy IoU de-duplication that is off by default (max overlap 1.0).
  Confidences are compared as **float32**, as the official code compares the
  detector's float32 array with the threshold (numpy casts the Python float to
  the array's dtype), so a score of exactly float32(0.3) = 0.30000001192... is
  *dropped* (it is not above float32(0.3)) although it is above the float64 0.3.
  Ties in confidence keep the official order, ``np.argsort(scores)[::-1]``:
  numpy's default (unstable) sort, reversed — the very call the official code
  makes, so the same numpy on the same CPU orders ties the same way (e.g. two
  equal top scores come out last detector index first), where a Python stable
  sort kept them in detector order;
* ``include`` clauses are ANDed, checked in order; colour and position are only
  judged on the ``count`` most confident objects of the class;
* ``exclude`` clauses are ORed;
* position relations shrink the centre offset by 0.1 x (size_a + size_b) per
  axis before normalising by the length of the unshrunk offset.

The colour step needs a model; :func:`evaluate` takes it as a callback so the
rules stay testable on hand-made detections.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from iqabench.contracts.errors import UserInputError

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Thresholds:
    """The official evaluation options (``--options threshold=... counting_threshold=...`` there)."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position_threshold: float = 0.1

    def __post_init__(self) -> None:
        if self.max_objects < 1:
            raise UserInputError(f"max_objects must be at least 1, got {self.max_objects}")
        if not 0.0 < self.max_overlap <= 1.0:
            raise UserInputError(f"max_overlap must be in (0, 1], got {self.max_overlap}")


@dataclass(frozen=True)
class Detection:
    """One detected object: box (x0, y0, x1, y1) in pixels, confidence, optional boolean mask [H, W]."""

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None

    def as_list(self) -> list[float]:
        """The official ``details`` entry: [x0, y0, x1, y1, score]."""
        return [float(v) for v in self.box] + [float(self.score)]


ColorFn = Callable[[list[Detection], str], list[str]]


def compute_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU with the official inclusive-pixel convention (width = x1 - x0 + 1)."""

    def area(b: Sequence[float]) -> float:
        return max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def official_order(scores: Sequence[float], cut: float) -> list[int]:
    """Indices of the scores strictly above ``cut``, most confident first, exactly as ``evaluate_images.py``.

    Both the sort and the comparison run on float32 (the detector's dtype in the
    official code): ``np.argsort(s)[::-1]`` then ``s[order] > cut``. A Python
    ``sorted`` on float64 would keep ties in detector order and keep a score of
    exactly float32(0.3); the official code reverses ties and drops it.
    """
    values = np.asarray(scores, dtype=np.float32)
    if values.size == 0:
        return []
    order = np.argsort(values)[::-1]
    return order[values[order] > np.float32(cut)].tolist()


def filter_detections(raw: Mapping[str, Sequence[Detection]], tag: str,
                      thresholds: Thresholds = Thresholds()) -> dict[str, list[Detection]]:
    """Class -> kept detections, most confident first; classes with none kept are absent (as officially)."""
    cut = np.float32(thresholds.counting_threshold if tag == "counting" else thresholds.threshold)
    kept: dict[str, list[Detection]] = {}
    for classname, detections in raw.items():
        detections = list(detections)
        ordered = [detections[i] for i in official_order([d.score for d in detections], cut)]
        ordered = ordered[: thresholds.max_objects]
        chosen: list[Detection] = []
        while ordered:
            best = ordered.pop(0)
            chosen.append(best)
            if thresholds.max_overlap < 1.0:
                ordered = [d for d in ordered if compute_iou(best.box, d.box) < thresholds.max_overlap]
        if chosen:
            kept[classname] = chosen
    return kept


def relative_position(box_a: Sequence[float], box_b: Sequence[float], position_threshold: float = 0.1) -> set[str]:
    """Relations of A to B ("left of", "right of", "above", "below"); image y grows downwards.

    The centre offset is shrunk per axis by ``position_threshold`` x (size_a +
    size_b), so objects that overlap a lot have no relation, then divided by
    the length of the *unshrunk* offset, so a relation needs the shrunk
    component to exceed half that length.
    """
    a = np.asarray(box_a[:4], dtype=np.float64).reshape(2, 2)
    b = np.asarray(box_b[:4], dtype=np.float64).reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)
    size_a, size_b = np.abs(a[1] - a[0]), np.abs(b[1] - b[0])
    shrunk = np.maximum(np.abs(offset) - position_threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def evaluate(detected: Mapping[str, list[Detection]], metadata: Mapping[str, Any],
             classify_colors: ColorFn | None = None, position_threshold: float = 0.1) -> tuple[bool, str]:
    """(correct, reason) for one image, from filtered detections and the prompt's requirements.

    ``reason`` joins one line per failed clause, worded as the official script
    words it, so failure tables can be compared with official ``results.jsonl``.
    """
    correct = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for req in metadata.get("include", []):
        classname, count = req["class"], int(req["count"])
        found = list(detected.get(classname, []))[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected {classname}>={count}, found {len(found)}")
        else:
            if "color" in req:
                if classify_colors is None:
                    raise ValueError(f"prompt {metadata.get('prompt')!r} needs a colour classifier, but none was given")
                colors = list(classify_colors(found, classname))
                if colors.count(req["color"]) < count:
                    matched = False
                    seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    reasons.append(f"expected {req['color']} {classname}>={count}, found "
                                   f"{colors.count(req['color'])} {req['color']}; and {seen}")
            if "position" in req and matched:
                relation, target = req["position"]
                if relation not in RELATIONS:
                    raise ValueError(f"unknown position relation {relation!r}; expected one of {', '.join(RELATIONS)}")
                if target >= len(groups):
                    raise ValueError(f"position of {classname!r} refers to requirement {target}, "
                                     "which does not come before it")
                if groups[target] is None:
                    matched = False
                    reasons.append(f"no target for {classname} to be {relation}")
                else:
                    for obj in found:
                        for other in groups[target]:
                            actual = relative_position(obj.box, other.box, position_threshold)
                            if relation not in actual:
                                matched = False
                                reasons.append(f"expected {classname} {relation} target, found "
                                               f"{' and '.join(actual)} target")
                                break
                        if not matched:
                            break
        correct = correct and matched
        groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        classname, count = req["class"], int(req["count"])
        n = len(detected.get(classname, []))
        if n >= count:
            correct = False
            reasons.append(f"expected {classname}<{count}, found {n}")
    return correct, "\n".join(reasons)


def result_row(filename: str, metadata: Mapping[str, Any], detected: Mapping[str, list[Detection]],
               correct: bool, reason: str) -> dict[str, Any]:
    """One line of the official ``results.jsonl`` (metadata and details are JSON strings there)."""
    return {
        "filename": filename, "tag": metadata["tag"], "prompt": metadata["prompt"], "correct": bool(correct),
        "reason": reason, "metadata": json.dumps(dict(metadata)),
        "details": json.dumps({c: [d.as_list() for d in ds] for c, ds in detected.items()}),
    }


@dataclass
class Summary:
    """The numbers ``summary_scores.py`` prints."""

    n_images: int
    n_prompts: int
    correct_images: float
    correct_prompts: float
    tasks: dict[str, float]  # tag -> share of correct images, in order of first appearance
    task_counts: dict[str, tuple[int, int]]  # tag -> (correct, total)
    overall: float  # mean of the task accuracies


def summarize(rows: Sequence[Mapping[str, Any]]) -> Summary:
    """Summary numbers from results rows (each with ``tag``, ``metadata`` (JSON text) and ``correct``).

    Prompts are identified by their metadata string, as officially: a prompt is
    correct when any of its images is.
    """
    if not rows:
        raise UserInputError("no GenEval results to summarize")
    by_prompt: dict[str, bool] = {}
    by_task: dict[str, list[bool]] = {}
    for row in rows:
        ok = bool(row["correct"])
        key = row["metadata"] if isinstance(row["metadata"], str) else json.dumps(row["metadata"])
        by_prompt[key] = by_prompt.get(key, False) or ok
        by_task.setdefault(row["tag"], []).append(ok)
    tasks = {tag: float(np.mean(v)) for tag, v in by_task.items()}
    return Summary(
        n_images=len(rows), n_prompts=len(by_prompt),
        correct_images=float(np.mean([bool(r["correct"]) for r in rows])),
        correct_prompts=float(np.mean(list(by_prompt.values()))),
        tasks=tasks, task_counts={t: (int(sum(v)), len(v)) for t, v in by_task.items()},
        overall=float(np.mean(list(tasks.values()))),
    )
