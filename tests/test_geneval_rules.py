"""GenEval's official rules on hand-made detections: thresholds, counts, colours, positions, exclude, summary."""

import json

import numpy as np
import pytest
from PIL import Image

from iqabench.benchmarks.geneval.layout import (
    load_metadata,
    load_object_names,
    read_official_folder,
    read_results_jsonl,
    write_official_folder,
    write_results_jsonl,
)
from iqabench.benchmarks.geneval.rules import (
    Detection,
    Thresholds,
    compute_iou,
    evaluate,
    filter_detections,
    relative_position,
    result_row,
    summarize,
)


def det(x0, y0, x1, y1, score=0.99):
    return Detection((x0, y0, x1, y1), score)


def by_color(colors):
    """A colour 'classifier' that returns fixed colours and records what it was asked about."""
    calls = []

    def classify(detections, classname):
        calls.append((classname, [d.score for d in detections]))
        return list(colors[classname][: len(detections)])

    classify.calls = calls
    return classify


# -- filtering -------------------------------------------------------------------------------------
def test_confidence_threshold_is_strict_at_0_3():
    raw = {"dog": [det(0, 0, 1, 1, 0.3), det(0, 0, 1, 1, 0.30001)], "cat": [det(0, 0, 1, 1, 0.3)]}
    kept = filter_detections(raw, "single_object")
    assert [d.score for d in kept["dog"]] == [0.30001]
    assert "cat" not in kept  # a class with nothing left is absent, as officially


def test_counting_task_uses_0_9():
    raw = {"clock": [det(0, 0, 1, 1, 0.9), det(0, 0, 1, 1, 0.95), det(0, 0, 1, 1, 0.5)]}
    assert [d.score for d in filter_detections(raw, "counting")["clock"]] == [0.95]
    assert [d.score for d in filter_detections(raw, "two_object")["clock"]] == [0.95, 0.9, 0.5]


def test_most_confident_first_and_at_most_16_per_class():
    scores = np.linspace(0.31, 0.99, 20)
    raw = {"apple": [det(i, 0, i + 1, 1, s) for i, s in enumerate(scores)]}
    kept = filter_detections(raw, "single_object")["apple"]
    assert len(kept) == 16
    assert [d.score for d in kept] == sorted(scores, reverse=True)[:16]


def test_iou_dedup_is_off_by_default_and_greedy_when_on():
    raw = {"cup": [det(0, 0, 9, 9, 0.9), det(0, 0, 9, 9, 0.8), det(50, 50, 59, 59, 0.7)]}
    assert len(filter_detections(raw, "single_object")["cup"]) == 3
    kept = filter_detections(raw, "single_object", Thresholds(max_overlap=0.5))["cup"]
    assert [d.score for d in kept] == [0.9, 0.7]


def test_iou_uses_inclusive_pixels():
    # 10x10 boxes overlapping in a 5x10 strip: inclusive widths make them 11x11 and 6x11.
    assert compute_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(66 / (121 + 121 - 66))
    assert compute_iou((0, 0, 1, 1), (5, 5, 6, 6)) == 0


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="max_overlap"):
        Thresholds(max_overlap=0)


# -- include / count -------------------------------------------------------------------------------
def test_count_requirement():
    meta = {"tag": "counting", "prompt": "two clocks", "include": [{"class": "clock", "count": 2}]}
    assert evaluate({"clock": [det(0, 0, 1, 1)] * 2}, meta) == (True, "")
    assert evaluate({"clock": [det(0, 0, 1, 1)]}, meta) == (False, "expected clock>=2, found 1")
    assert evaluate({}, meta) == (False, "expected clock>=2, found 0")


def test_includes_are_anded_with_one_reason_each():
    meta = {"tag": "two_object", "prompt": "p", "include": [{"class": "bench", "count": 1},
                                                          {"class": "sports ball", "count": 1}]}
    assert evaluate({"bench": [det(0, 0, 1, 1)], "sports ball": [det(0, 0, 1, 1)]}, meta)[0]
    correct, reason = evaluate({}, meta)
    assert not correct and reason == "expected bench>=1, found 0\nexpected sports ball>=1, found 0"


# -- colour ----------------------------------------------------------------------------------------
def test_color_requirement_counts_the_required_colour():
    meta = {"tag": "colors", "prompt": "p", "include": [{"class": "car", "count": 2, "color": "red"}]}
    dets = {"car": [det(0, 0, 1, 1, 0.9), det(0, 0, 1, 1, 0.8), det(0, 0, 1, 1, 0.7)]}
    assert evaluate(dets, meta, by_color({"car": ["red", "red", "blue"]}))[0]
    correct, reason = evaluate(dets, meta, by_color({"car": ["red", "blue", "red"]}))
    assert not correct
    assert reason == "expected red car>=2, found 1 red; and 1 red, 1 blue"


def test_color_is_judged_on_the_count_most_confident_objects_only():
    meta = {"tag": "colors", "prompt": "p", "include": [{"class": "car", "count": 1, "color": "red"}]}
    classify = by_color({"car": ["red"]})
    evaluate({"car": [det(0, 0, 1, 1, 0.9), det(0, 0, 1, 1, 0.8)]}, meta, classify)
    assert classify.calls == [("car", [0.9])]


def test_color_without_classifier_is_a_clear_error():
    meta = {"tag": "colors", "prompt": "a red car", "include": [{"class": "car", "count": 1, "color": "red"}]}
    with pytest.raises(ValueError, match="colour classifier"):
        evaluate({"car": [det(0, 0, 1, 1)]}, meta)


# -- position --------------------------------------------------------------------------------------
def test_relations_follow_image_axes():
    b = (0, 0, 10, 10)
    assert relative_position((30, 0, 40, 10), b) == {"right of"}
    assert relative_position((-30, 0, -20, 10), b) == {"left of"}
    assert relative_position((0, -30, 10, -20), b) == {"above"}  # y grows downwards
    assert relative_position((0, 30, 10, 40), b) == {"below"}
    assert relative_position((30, 30, 40, 40), b) == {"right of", "below"}  # diagonal: dx = dy = 0.85


def test_overlapping_objects_have_no_relation():
    # centres 1 px apart, sizes 10: the shrunk offset is 0 on both axes
    assert relative_position((1, 0, 11, 10), (0, 0, 10, 10)) == set()


def test_relation_threshold_edge_is_strict():
    # offset (6, 8), |offset| = 10; widths sum to 10 -> shrunk dx = 6 - 1 = 5 -> dx = 0.5 exactly: no relation.
    b = (-2.5, 0, 2.5, 0)
    assert relative_position((3.5, 8, 8.5, 8), b) == {"below"}
    # widths sum to 9 -> shrunk dx = 5.1 -> 0.51 > 0.5: right of.
    assert relative_position((3.75, 8, 8.25, 8), (-2.5, 0, 2.5, 0)) == {"right of", "below"}


def test_position_threshold_option_changes_the_margin():
    a, b = (11, 0, 21, 10), (0, 0, 10, 10)  # offset 11, sizes 20
    assert relative_position(a, b, 0.1) == {"right of"}  # 11 - 2 = 9 -> 9/11 > 0.5
    assert relative_position(a, b, 0.5) == set()  # 11 - 10 = 1 -> 1/11 < 0.5


POSITION = {"tag": "position", "prompt": "a photo of a dog right of a teddy bear",
            "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}


def test_position_requirement_holds_and_fails():
    bear = [det(0, 0, 10, 10)]
    assert evaluate({"teddy bear": bear, "dog": [det(30, 0, 40, 10)]}, POSITION) == (True, "")
    correct, reason = evaluate({"teddy bear": bear, "dog": [det(-30, 0, -20, 10)]}, POSITION)
    assert not correct and reason == "expected dog right of target, found left of target"
    correct, reason = evaluate({"teddy bear": bear, "dog": [det(1, 0, 11, 10)]}, POSITION)
    assert not correct and reason == "expected dog right of target, found  target"


def test_position_with_failed_target_group():
    correct, reason = evaluate({"dog": [det(30, 0, 40, 10)]}, POSITION)
    assert not correct
    assert reason == "expected teddy bear>=1, found 0\nno target for dog to be right of"


def test_position_must_hold_for_every_pair():
    meta = {"tag": "position", "prompt": "p", "include": [
        {"class": "cup", "count": 2}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    cups = [det(0, 0, 10, 10, 0.9), det(100, 0, 110, 10, 0.8)]
    correct, reason = evaluate({"cup": cups, "dog": [det(50, 0, 60, 10)]}, meta)
    assert not correct and reason == "expected dog right of target, found left of target"
    assert evaluate({"cup": cups, "dog": [det(200, 0, 210, 10)]}, meta)[0]


def test_position_skipped_when_colour_already_failed():
    meta = {"tag": "color_attr", "prompt": "p", "include": [
        {"class": "cup", "count": 1}, {"class": "dog", "count": 1, "color": "red", "position": ["right of", 0]}]}
    correct, reason = evaluate({"cup": [det(0, 0, 10, 10)], "dog": [det(-30, 0, -20, 10)]}, meta,
                               by_color({"dog": ["blue"]}))
    assert not correct and reason == "expected red dog>=1, found 0 red; and 1 blue"


# -- exclude ---------------------------------------------------------------------------------------
def test_exclude_fails_at_count():
    meta = {"tag": "counting", "prompt": "two clocks", "include": [{"class": "clock", "count": 2}],
            "exclude": [{"class": "clock", "count": 3}]}
    assert evaluate({"clock": [det(0, 0, 1, 1)] * 2}, meta) == (True, "")
    assert evaluate({"clock": [det(0, 0, 1, 1)] * 3}, meta) == (False, "expected clock<3, found 3")


def test_counting_prompt_end_to_end_with_thresholds():
    meta = load_metadata()[next(i for i, m in enumerate(load_metadata()) if m["prompt"] == "a photo of two clocks")]
    raw = {"clock": [det(0, 0, 1, 1, 0.95), det(0, 0, 1, 1, 0.92), det(0, 0, 1, 1, 0.85)]}
    assert evaluate(filter_detections(raw, meta["tag"]), meta)[0]  # the 0.85 clock does not count
    raw["clock"].append(det(0, 0, 1, 1, 0.91))
    assert evaluate(filter_detections(raw, meta["tag"]), meta) == (False, "expected clock<3, found 3")


# -- summary and files -----------------------------------------------------------------------------
def _rows():
    rows = []
    truth = {  # (tag, prompt) -> correctness of its 4 images
        ("single_object", "a"): [1, 1, 1, 0], ("single_object", "b"): [0, 0, 0, 0],
        ("counting", "c"): [1, 0, 0, 0], ("position", "d"): [0, 0, 0, 0],
    }
    for (tag, prompt), flags in truth.items():
        meta = {"tag": tag, "prompt": prompt, "include": []}
        rows += [result_row(f"{prompt}/{i}.png", meta, {}, bool(f), "" if f else "x") for i, f in enumerate(flags)]
    return rows


def test_summary_numbers():
    s = summarize(_rows())
    assert s.n_images == 16 and s.n_prompts == 4
    assert s.tasks == {"single_object": 3 / 8, "counting": 1 / 4, "position": 0.0}
    assert s.overall == pytest.approx((3 / 8 + 1 / 4 + 0) / 3)
    assert s.correct_images == 4 / 16 and s.correct_prompts == 2 / 4
    assert s.task_counts["single_object"] == (3, 8)
    with pytest.raises(ValueError, match="no GenEval results"):
        summarize([])


def test_results_jsonl_round_trip(tmp_path):
    det_row = result_row("00000/samples/00000.png", POSITION, {"dog": [det(1, 2, 3, 4, 0.5)]}, False, "why")
    path = write_results_jsonl(tmp_path / "results.jsonl", _rows() + [det_row])
    back = read_results_jsonl(path)
    assert list(back[-1]) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert json.loads(back[-1]["details"]) == {"dog": [[1.0, 2.0, 3.0, 4.0, 0.5]]}
    assert json.loads(back[-1]["metadata"]) == POSITION
    assert summarize(back).overall == summarize(_rows() + [det_row]).overall
    (tmp_path / "bad.jsonl").write_text('{"tag": "x"}\n')
    with pytest.raises(ValueError, match="line 1 lacks the field"):
        read_results_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('\n{"tag": "x", "correct": true, "metadata": "{}"}\n{oops\n')
    with pytest.raises(ValueError, match=r"broken.jsonl line 3 is not JSON: Expecting property name"):
        read_results_jsonl(tmp_path / "broken.jsonl")


def test_official_folder_round_trip(tmp_path):
    metas = load_metadata()[:3]
    images = [[Image.new("RGB", (8, 8), (i * 40, n * 60, 0)) for n in range(2)] for i in range(3)]
    write_official_folder(tmp_path, [(i, m, ims) for i, (m, ims) in enumerate(zip(metas, images, strict=True))])
    assert (tmp_path / "00002" / "samples" / "00001.png").is_file()
    samples = read_official_folder(tmp_path)
    assert [(s.index, s.sample) for s in samples] == [(i, n) for i in range(3) for n in range(2)]
    assert samples[3].metadata == metas[1]
    assert Image.open(samples[3].path).getpixel((0, 0)) == (40, 60, 0)
    with pytest.raises(ValueError, match="no GenEval samples"):
        read_official_folder(tmp_path / "00000" / "samples")


def test_vendored_data():
    metas = load_metadata()
    assert len(metas) == 553 and len(load_object_names()) == 80
    assert {m["tag"] for m in metas} == {"single_object", "two_object", "counting", "colors", "position",
                                        "color_attr"}
    names = set(load_object_names())
    assert all(r["class"] in names for m in metas for r in m["include"])


def test_official_folder_keeps_sample_numbers_when_an_image_is_missing(tmp_path):
    # Sample 1 failed to generate: sample 2 must stay 00002.png, as results.jsonl names it.
    from types import SimpleNamespace

    from iqabench.benchmarks.geneval.benchmark import GenEval

    meta = load_metadata()[0]
    images = {"k0": Image.new("RGB", (8, 8), (10, 0, 0)), "k2": Image.new("RGB", (8, 8), (30, 0, 0))}
    rows = [result_row(f"00000/samples/{n:05d}.png", meta, {}, True, "") | {"generator": "g", "prompt_index": 0,
                                                                            "image_key": k}
            for n, k in ((0, "k0"), (2, "k2"))]
    ctx = SimpleNamespace(store=SimpleNamespace(load_image=images.__getitem__))
    GenEval()._export(ctx, tmp_path, rows, ["g"])
    samples = read_official_folder(tmp_path / "g")
    assert [s.sample for s in samples] == [0, 2]
    assert Image.open(samples[1].path).getpixel((0, 0)) == (30, 0, 0)
    assert [r["filename"] for r in read_results_jsonl(tmp_path / "g" / "results.jsonl")] == \
        ["00000/samples/00000.png", "00000/samples/00002.png"]


def test_geneval_summary_command_reads_an_official_results_file(tmp_path):
    from typer.testing import CliRunner

    from iqabench.cli import app

    path = write_results_jsonl(tmp_path / "results.jsonl", _rows())
    done = CliRunner().invoke(app, ["geneval-summary", str(path)], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "overall score (mean of task accuracies): 0.20833" in done.output
    assert "correct prompts: 50.00% of 4" in done.output
    missing = CliRunner().invoke(app, ["geneval-summary", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "no GenEval results file" in missing.output


# -- float32 comparisons and tie order (issue 16) -----------------------------------------------
def test_a_score_of_exactly_float32_0_3_is_dropped_as_officially():
    """The official code compares the detector's float32 array with 0.3: float32(0.3) is not above it,
    although float(np.float32(0.3)) = 0.30000001192... is above the float64 0.3."""
    edge = float(np.float32(0.3))
    assert edge > 0.3  # kept by a float64 comparison
    official = np.array([edge], dtype=np.float32)
    assert not (official > 0.3).any()  # dropped by the official comparison
    raw = {"dog": [det(0, 0, 1, 1, edge), det(0, 0, 1, 1, float(np.nextafter(np.float32(0.3), np.float32(1))))]}
    kept = filter_detections(raw, "single_object")
    assert len(kept["dog"]) == 1 and kept["dog"][0].score > edge
    counting = {"clock": [det(0, 0, 1, 1, float(np.float32(0.9)))]}
    assert filter_detections(counting, "counting") == {}


def test_ties_follow_the_official_argsort_reversed_order():
    scores = [0.5, 0.7, 0.5, 0.5, 0.2, 0.7, 0.5]
    raw = {"cup": [det(i, 0, i + 1, 1, s) for i, s in enumerate(scores)]}
    kept = [int(d.box[0]) for d in filter_detections(raw, "single_object")["cup"]]
    values = np.asarray(scores, dtype=np.float32)
    order = np.argsort(values)[::-1]
    assert kept == order[values[order] > 0.3].tolist()  # the official two lines, verbatim in effect
    assert kept[:2] == [5, 1]  # the tied 0.7s: last detector index first
    assert kept != [1, 5, 0, 2, 3, 6]  # not the stable (detector-order) tie order the rules used before


def test_official_order_on_random_cases_matches_the_official_lines():
    from iqabench.benchmarks.geneval.rules import official_order

    rng = np.random.default_rng(0)
    for _ in range(200):
        values = rng.choice(np.float32([0.2, 0.3, 0.5, 0.9, 0.95]), size=rng.integers(0, 30)).astype(np.float32)
        cut = float(rng.choice([0.3, 0.9]))
        order = np.argsort(values)[::-1]
        assert official_order(values.tolist(), cut) == order[values[order] > cut].tolist()
