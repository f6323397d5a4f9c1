"""Report persistence and HTML rendering, on a hand-built Result in a temporary Store."""

from __future__ import annotations

import base64
import hashlib
import html as htmllib
import io
import json
import re
import threading

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqabench.contracts.results import ImageRef, Result
from iqabench.reports import (
    heatmap_figure,
    load_result,
    render_html,
    render_report,
    save_result,
    table_view,
)
from iqabench.store.store import Store, content_key

EVIL_PROMPT = "<script>alert(1)</script> a cat"
BIG, SMALL = content_key("big image"), content_key("small image")


@pytest.fixture()
def store(tmp_path) -> Store:
    store = Store(tmp_path / "store")
    rng = np.random.default_rng(0)
    store.put_image(BIG, Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)))
    store.put_image(SMALL, Image.fromarray(np.full((64, 48, 3), 200, dtype=np.uint8)))
    for run_id, generators in (("run-a", ["tiny-sd", "iqa-adapter:topiq"]), ("run-b", ["sd15"])):
        store.write_run_json(
            run_id,
            {
                "run_id": run_id,
                "spec": {"benchmark": "relgain", "generators": generators, "metrics": ["piqe", "entropy"]},
                "metrics": {"piqe": "fp-piqe", "entropy": "fp-entropy"},  # what the runner scored with
                "versions": {"torch": "2.14.1", "iqabench": "0.1.0"},
                "environment": {"device": "cpu", "host": "test-host"},
                "status": "complete",
                "created": "2025-01-01T00:00:00Z",
                "plan": {"items": 2},
            },
        )
    return store


def relgain_matrix() -> pd.DataFrame:
    return pd.DataFrame(
        [[12.5, -3.25], [0.0, np.nan]],
        index=pd.Index(["iqa-adapter:topiq", "guidance:topiq_nr"], name="generator"),
        columns=pd.Index(["piqe", "entropy"], name="metric"),
    )


def make_result(headline: float = 4.25) -> Result:
    scores = pd.DataFrame(
        {
            "generator": ["tiny-sd", "iqa-adapter:topiq"],
            "piqe": [41.23456, 35.5],
            "piqe_ci_low": [39.0, 33.25],
            "piqe_ci_high": [43.5, 37.75],
            "n": [2, 2],
        }
    )
    grid = [
        ImageRef(BIG, f"{EVIL_PROMPT} / seed 0", {"piqe": 41.23456}, "tiny-sd"),
        ImageRef(SMALL, f"{EVIL_PROMPT} / seed 0", {"piqe": 35.5}, "iqa-adapter:topiq"),
    ]
    from iqabench.analysis.decisions import wide_headline

    head = wide_headline("scores", scores, row_key="generator", columns=["piqe"], quantity="piqe", signed=False,
                         higher_better=False, n_units_column=None)
    return Result(
        benchmark="relgain",
        tables={"scores": scores, "relgain": relgain_matrix()}, headlines=[head],
        figures={"relgain_heatmap": heatmap_figure(relgain_matrix(), "RelGain (%)")},
        grids={"samples": grid},
        summary={"relgain_mean": headline, "n_images": 2, "failures": ["img 3: <NaN score> from piqe"]},
        notes=["PIQE is lower-better; RelGain signs are flipped for it & similar metrics."],
    )


def test_save_writes_csv_svg_and_result_json(store):
    save_result(store, "run-a", make_result())
    folder = store.run_dir("run-a") / "results"
    assert sorted(p.name for p in folder.iterdir()) == [
        "relgain.csv",
        "relgain.md",
        "relgain.tex",
        "relgain_heatmap.pdf",
        "relgain_heatmap.png",
        "relgain_heatmap.svg",
        "result.json",
        "scores.csv",
        "scores.headline.tex",  # the run's headline grid, as the report shows it
        "scores.md",
        "scores.tex",
    ]
    document = json.loads((folder / "result.json").read_text())
    assert [t["name"] for t in document["tables"]] == ["scores", "relgain"]
    assert [f["name"] for f in document["figures"]] == ["relgain_heatmap"]
    assert document["grids"]["samples"][1] == {
        "image_key": SMALL,
        "caption": f"{EVIL_PROMPT} / seed 0",
        "scores": {"piqe": 35.5},
        "group": "iqa-adapter:topiq",
    }
    assert (folder / "relgain_heatmap.svg").read_text().lstrip().startswith("<?xml")
    assert "generator,piqe,entropy" in (folder / "relgain.csv").read_text()


def test_tables_export_as_booktabs_latex_and_markdown_with_their_footnote(store):
    result = make_result()
    result.add_table("scores", result.tables["scores"], footnote="Brackets: 95% CI, BCa bootstrap over images.")
    save_result(store, "run-a", result)
    folder = store.run_dir("run-a") / "results"
    tex = (folder / "scores.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "iqa-adapter:topiq & 35.5 [33.2, 37.8] & 2 \\\\" in tex
    assert "\\caption{scores. Brackets: 95\\% CI, BCa bootstrap over images.}" in tex
    assert "\\begin{tabular}{lrr}" in tex and "\\resizebox{" in tex
    md = (folder / "scores.md").read_text()
    assert "| iqa-adapter:topiq |" in md and "35.5 [33.2, 37.8]" in md and "BCa bootstrap over images" in md


def test_figures_export_as_300_dpi_png_and_pdf(store):
    save_result(store, "run-a", make_result())
    folder = store.run_dir("run-a") / "results"
    png = Image.open(folder / "relgain_heatmap.png")
    assert png.info["dpi"] == pytest.approx((300, 300), abs=0.5)
    assert png.width > 1000  # several inches at 300 dpi
    assert (folder / "relgain_heatmap.pdf").read_bytes().startswith(b"%PDF")


def test_result_json_carries_estimates_with_ci_n_and_method(store):
    result = make_result()
    result.add_table("scores", result.tables["scores"].assign(n_units=2),
                     footnote="Brackets: 95% CI, cluster BCa bootstrap over prompts.", unit="prompt")
    save_result(store, "run-a", result)
    document = json.loads((store.run_dir("run-a") / "results" / "result.json").read_text())
    assert document["schema_version"] == 2
    assert document["estimates"][1] == {
        "table": "scores", "row": {"generator": "iqa-adapter:topiq"}, "quantity": "piqe",
        "estimate": 35.5, "ci_low": 33.25, "ci_high": 37.75, "n": 2, "n_units": 2, "unit": "prompt",
        "n_images": None, "p_holm": None, "significant": None,
        "method": "Brackets: 95% CI, cluster BCa bootstrap over prompts.",
    }
    assert load_result(store, "run-a").footnotes["scores"].startswith("Brackets")


def test_save_closes_pyplot_figures(store):
    fig = plt.figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    save_result(store, "run-a", Result("relgain", figures={"line": fig}))
    assert not plt.fignum_exists(fig.number)


def test_round_trip_keeps_tables_grids_summary_and_notes(store):
    original = make_result()
    save_result(store, "run-a", original)
    loaded = load_result(store, "run-a")
    assert loaded.benchmark == "relgain"
    pd.testing.assert_frame_equal(loaded.tables["scores"], original.tables["scores"])
    # the labelled index comes back as the index; the columns' axis name is not kept by CSV
    pd.testing.assert_frame_equal(loaded.tables["relgain"], relgain_matrix(), check_names=False)
    assert loaded.tables["relgain"].index.name == "generator"
    assert loaded.figures["relgain_heatmap"].startswith("<svg")
    assert loaded.grids == original.grids
    assert loaded.summary == original.summary
    assert loaded.notes == original.notes


def test_nan_in_summary_is_written_as_strict_json_null(store):
    save_result(store, "run-a", Result("relgain", summary={"gain": float("nan"), "n": np.int64(3)}))
    text = (store.run_dir("run-a") / "results" / "result.json").read_text()
    assert "NaN" not in text
    assert load_result(store, "run-a").summary == {"gain": None, "n": 3}


@pytest.mark.parametrize("kind", ["tables", "figures"])
@pytest.mark.parametrize("name", ["../evil", "sub/evil", ".hidden", ""])
def test_unsafe_table_or_figure_name_is_refused_before_writing(store, kind, name):
    value = pd.DataFrame({"a": [1]}) if kind == "tables" else heatmap_figure(relgain_matrix(), "x")
    result = make_result()
    getattr(result, kind)[name] = value
    with pytest.raises(ValueError, match="not allowed"):
        save_result(store, "run-a", result)
    assert not (store.run_dir("run-a") / "results").exists()
    assert not (store.runs_dir / "evil.csv").exists() and not (store.runs_dir / "evil.svg").exists()


def test_table_view_merges_confidence_intervals_and_formats_numbers():
    view = table_view(make_result().tables["scores"])
    assert view.columns == ["generator", "piqe", "n"]
    assert [cell.text for cell in view.rows[0]] == ["tiny-sd", "41.2 [39.0, 43.5]", "2"]
    assert view.rows[1][1].text == "35.5 [33.2, 37.8]"
    assert view.rows[0][1].sort_key == repr(41.23456)
    matrix = table_view(relgain_matrix())
    assert matrix.columns == ["generator", "piqe", "entropy"]
    assert matrix.rows[0][0].header and not matrix.rows[0][1].header
    assert [cell.text for cell in matrix.rows[1]] == ["guidance:topiq_nr", "0", "–"]


def test_render_shows_tables_figures_thumbnails_and_escapes_prompts(store):
    save_result(store, "run-a", make_result())
    path = render_report(store, ["run-a"])
    assert path == store.run_dir("run-a") / "report.html"
    html = path.read_text("utf-8")
    assert "41.2 [39.0, 43.5]" in html and "−3.25" in html
    assert html.count("<svg") == 1 and "<?xml" not in html
    assert html.count('src="data:image/png;base64,') == 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a cat / seed 0" in html
    assert "<script>alert" not in html
    assert "RelGain signs are flipped for it &amp; similar metrics." in html
    assert "img 3: &lt;NaN score&gt; from piqe" in html
    assert "<details" in html and "test-host" in html and "2.14.1" in html


def test_thumbnails_are_downscaled_pngs(store):
    save_result(store, "run-a", make_result())
    html = render_html(store, ["run-a"])
    sizes = [
        Image.open(io.BytesIO(base64.b64decode(data))).size
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]
    assert sizes == [(160, 120), (48, 64)]  # 640x480 shrunk to 160 px wide; small images are not enlarged


def test_thumbnails_made_on_a_pool_give_the_same_page_as_one_by_one(store, monkeypatch):
    """The report's thumbnails are decoded on threads (the bulk of its fixed cost at full size); the page must be
    the one the serial path makes, damaged and missing images included, and rows past MAX_GRID_ROWS never decoded."""
    from iqabench.reports import render as render_module

    rng = np.random.default_rng(1)
    keys = [content_key(f"image {i}") for i in range(6)]
    for key in keys:
        store.put_image(key, Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)))
    store.image_path(keys[5]).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    refs = [ImageRef(key, f"prompt {i}", {"piqe": float(i)}, "g") for i, key in enumerate(keys)]
    refs.append(ImageRef(content_key("never generated"), "lost", {}, "g"))
    save_result(store, "run-a", Result("scores", grids={"samples": refs, "again": refs[:2]}))
    monkeypatch.setattr(render_module, "MAX_GRID_ROWS", 6)  # the "lost" row is counted, not shown

    made: list[tuple[str, str]] = []
    make = render_module._Thumbnails._make

    def recording_make(self, key):
        made.append((key, threading.current_thread().name))
        return make(self, key)

    monkeypatch.setattr(render_module._Thumbnails, "_make", recording_make)
    monkeypatch.setattr(render_module, "default_workers", lambda: 4)
    pooled = render_html(store, ["run-a"])
    assert sorted(k for k, _ in made) == sorted(keys)  # once each, across both grids; the 7th row is not shown
    assert all(name.startswith("thumbnail") for _, name in made)
    made.clear()
    monkeypatch.setattr(render_module, "default_workers", lambda: 1)
    serial = render_html(store, ["run-a"])
    assert {name for _, name in made} == {threading.current_thread().name}
    assert pooled == serial
    assert pooled.count('src="data:image/png;base64,') == 5 + 2 and "cached image is damaged" in pooled


def test_report_loads_nothing_from_outside_and_allows_only_its_own_script(store):
    save_result(store, "run-a", make_result())
    html = render_html(store, ["run-a"])
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", html, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?(?:https?:|//)", html, re.IGNORECASE)
    assert "<link" not in html
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = htmllib.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp


def test_two_runs_render_side_by_side_with_a_runs_table(store):
    save_result(store, "run-a", make_result(headline=4.25))
    second = make_result(headline=-1.5)
    second.summary = {"relgain_mean": -1.5, "fid_topk": 12.0}
    save_result(store, "run-b", second)
    out = store.root / "combined.html"
    assert render_report(store, ["run-a", "run-b"], out=out) == out
    html = out.read_text("utf-8")
    overview = html.split('<section class="run"')[0]
    for text in ("run-a", "run-b", "tiny-sd, iqa-adapter:topiq", "sd15", "piqe, entropy", "complete"):
        assert text in overview, text
    section_b = html.split('id="run-run-b"')[1]
    assert "fid topk" in section_b and "12" in section_b and "−1.5" in section_b  # the summary, formatted
    assert 'id="run-run-a"' in html and 'id="run-run-b"' in html
    assert html.index('id="run-run-a"') < html.index('id="run-run-b"')


def test_run_without_results_renders_its_status(store):
    html = render_html(store, ["run-b"])
    assert "no saved results yet" in html and "complete" in html


def test_unknown_run_and_empty_list_are_clear_errors(store):
    with pytest.raises(FileNotFoundError, match="run 'nope' has neither a run.json nor saved results"):
        render_report(store, ["nope"])
    with pytest.raises(ValueError, match="at least one run id"):
        render_report(store, [])


def test_missing_cached_image_renders_a_placeholder(store):
    result = make_result()
    result.grids["samples"].append(ImageRef(content_key("never generated"), "lost", {}, "tiny-sd"))
    save_result(store, "run-a", result)
    html = render_html(store, ["run-a"])
    assert "image not in the cache" in html
    assert html.count('src="data:image/png;base64,') == 2


def test_tampered_svg_loses_its_script_on_load(store):
    """Issue 15: figures go through the allow-list sanitiser (tests/test_sanitize.py feeds the bypasses)."""
    save_result(store, "run-a", make_result())
    svg = store.run_dir("run-a") / "results" / "relgain_heatmap.svg"
    svg.write_text(svg.read_text().replace("</svg>", '<script>alert("x")</script></svg>'))
    figure = load_result(store, "run-a").figures["relgain_heatmap"]
    assert "<script" not in figure and "alert" not in figure and "<path" in figure


def test_unparsable_svg_is_left_out_with_a_note_and_the_report_still_renders(store):
    save_result(store, "run-a", make_result())
    svg = store.run_dir("run-a") / "results" / "relgain_heatmap.svg"
    svg.write_text('<svg><meta http-equiv=refresh content="0;url=https://evil.example/"></svg>')
    html = render_html(store, ["run-a"])
    assert "evil.example" not in html and "refresh" not in html
    assert "Figure &#39;relgain_heatmap&#39; was left out of this report" in html


def test_heatmap_is_diverging_centred_and_annotated():
    fig = heatmap_figure(relgain_matrix(), "RelGain (%)", center=0.0, fmt=".1f")
    ax = fig.axes[0]
    mesh = ax.collections[0]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (-12.5, 12.5)
    low, mid, high = (mesh.cmap(x) for x in (0.0, 0.5, 1.0))
    assert low[0] > low[2] and high[2] > high[0]  # losses red, gains blue
    assert min(mid[:3]) > 0.9  # no change is (near) white
    # the shared formatter: true minus, 3 significant figures, 0 without decimals; NaN cell left blank
    assert sorted(t.get_text() for t in ax.texts) == ["0", "12.5", "−3.25"]
    assert ax.get_title() == "RelGain (%)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["iqa-adapter:topiq", "guidance:topiq_nr"]


def test_heatmap_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        heatmap_figure(pd.DataFrame(), "empty")
    with pytest.raises(ValueError, match="numeric"):
        heatmap_figure(pd.DataFrame({"a": ["x"]}), "text")
    with pytest.raises(ValueError, match="number format"):
        heatmap_figure(relgain_matrix(), "t", fmt="q")


def test_summary_is_text_not_json_and_runner_failures_are_shown(store):
    manifest = store.read_run_json("run-b")
    store.write_run_json("run-b", manifest | {"failures": {"abc123": "generate: CUDA out of memory"}})
    summary = {"relgain": {"sd15 | piqe": 2.5, "sd15 | entropy": -0.75}, "generators": ["sd15", "x<y"], "n_items": 3}
    save_result(store, "run-b", Result("relgain", summary=summary))
    html = render_html(store, ["run-b"])
    summary_block = html.split('<dl class="summary">')[1].split("</dl>")[0]
    assert "<dd>sd15 | piqe: 2.5; sd15 | entropy: −0.75</dd>" in summary_block
    assert "<dd>sd15, x&lt;y</dd>" in summary_block and "<dt>n items</dt><dd>3</dd>" in summary_block
    assert "{" not in summary_block and "&#34;" not in summary_block  # no JSON
    assert "abc123: generate: CUDA out of memory" in html


def test_long_tables_are_cut_in_the_html_with_a_pointer_to_the_full_csv(store, monkeypatch):
    from iqabench.reports import render as render_module

    monkeypatch.setattr(render_module, "MAX_TABLE_ROWS", 40)
    result = Result("relgain", tables={"per_item": pd.DataFrame({"item": [f"row-{i}" for i in range(100)]})})
    save_result(store, "run-long", result)
    html = render_report(store, ["run-long"]).read_text("utf-8")
    assert "row-39<" in html and "row-40<" not in html
    assert "(100 rows; click to show)" in html
    assert "Showing the first 40 of 100 rows" in html and "runs/run-long/results/per_item.csv" in html
    assert len(pd.read_csv(store.run_dir("run-long") / "results" / "per_item.csv")) == 100  # nothing lost


def test_short_tables_are_not_cut(store):
    save_result(store, "run-short", Result("relgain", tables={"t": pd.DataFrame({"item": ["a", "b"]})}))
    assert "Showing the first" not in render_report(store, ["run-short"]).read_text("utf-8")


def test_leftover_integer_index_is_not_written_or_shown(store):
    counts = pd.DataFrame({"task": ["a", "b", "c"], "n": [3, 1, 2]}).sort_values("n", ascending=False)
    assert counts.index.tolist() == [0, 2, 1]  # a sorted default index: meaningless labels
    named = pd.DataFrame({"n": [1, 2]}, index=pd.Index([10, 20], name="prompt_index"))
    save_result(store, "run-a", Result("x", tables={"counts": counts, "named": named}))
    folder = store.run_dir("run-a") / "results"
    assert (folder / "counts.csv").read_text().splitlines()[0] == "task,n"
    assert (folder / "named.csv").read_text().splitlines()[0] == "prompt_index,n"
    assert table_view(counts).columns == ["task", "n"]


def _relgain_result(footnote: str = "Brackets: 95% CI, BCa bootstrap over images.", **fields) -> Result:
    """A relgain table with unit-level p-values, typed as the benchmark types it (Holm over its 4 cells)."""
    from iqabench.analysis.decisions import effect_table, long_headline

    frame = pd.DataFrame({
        "generator": ["g1", "g1", "g<2>", "g<2>"], "metric": ["piqe", "entropy", "piqe", "entropy"],
        "relgain": [2.2, 5.0, 8.0, -1.0], "relgain_ci_low": [-7.0, 1.0, 4.0, -3.0],
        "relgain_ci_high": [11.0, 9.0, 12.0, -0.5], "n": [10, 10, 10, 10], "n_units": [10, 10, 10, 10],
        # entropy of g1: its CI is clear of 0 but Holm over the table says no -> n.s., never bold
        "p_value": [0.4, 0.03, 0.001, 0.004]})
    table = effect_table(frame, {"relgain": "p_value"}, footnote=footnote, unit="prompt")
    head = long_headline("relgain", table.frame, row_key="generator", column_key="metric", value="relgain",
                         quantity="relgain", signed=True, higher_better=True, footnote=footnote, p_column="p_value",
                         unit="prompt")
    result = Result("relgain", headlines=[head], **fields)
    result.add_table("relgain", table)
    return result


def test_headline_marks_best_and_not_significant_cells_with_styler(store):
    from statsmodels.stats.multitest import multipletests

    save_result(store, "run-a", _relgain_result(summary={"relgain": {"g1 | piqe": 2.2}, "n_items": 10}))
    html = render_html(store, ["run-a"])
    head = html.split('class="headline"')[1].split("</table>")[0]
    by_text = {text.strip(): cls for cls, text in re.findall(r'<td [^>]*class="([^"]*)"\s*>([^<]*)</td>', head)}
    assert len(by_text) == 4
    assert multipletests([0.4, 0.03, 0.001, 0.004], method="holm")[0].tolist() == [False, False, True, True]
    assert {"num", "ns"} <= set(by_text["2.2 [−7.0, 11.0] n.s."].split())
    assert "best" in by_text["8.0 [4.0, 12.0]"].split()  # best (and significant) piqe gain
    # CI [1, 9] excludes 0 but the Holm-adjusted p (0.06) does not pass: n.s., and no bold in its column
    assert {"ns"} <= set(by_text["5.00 [1.00, 9.00] n.s."].split())
    assert "best" not in by_text["5.00 [1.00, 9.00] n.s."].split()
    assert "ns" not in by_text["−1.00 [−3.00, −0.50]"].split()  # a significant loss is not n.s.
    assert "best" in by_text["−1.00 [−3.00, −0.50]"].split()  # the only significant entropy cell
    assert "g&lt;2&gt;" in head and "g<2>" not in head  # Styler escapes labels
    after = html.split('class="headline"')[1]
    assert "n.s.: Holm-adjusted p &gt;= 0.05" in after and "BCa bootstrap over images" in after
    assert "g1 | piqe: 2.2" not in html  # the summary mapping repeats the headline: left out


def test_scores_headline_marks_best_by_the_metrics_direction(store):
    table = pd.DataFrame({"generator": ["a", "a", "b", "b"], "metric": ["piqe", "entropy"] * 2,
                          "direction": ["lower is better", "higher is better"] * 2,
                          "score": [30.0, 7.0, 20.0, 6.0], "score_ci_low": [29.0, 6.9, 19.0, 5.9],
                          "score_ci_high": [31.0, 7.1, 21.0, 6.1]})
    from iqabench.analysis.decisions import long_headline

    head = long_headline("scores", table, row_key="generator", column_key="metric", value="score", quantity="score",
                         signed=False, higher_better={"piqe": False, "entropy": True}, n_units_column=None)
    save_result(store, "run-a", Result("scores", tables={"scores": table}, headlines=[head]))
    html = render_html(store, ["run-a"])
    grid = html.split('class="headline"')[1].split("</table>")[0]
    by_text = {text.strip(): cls.split() for cls, text in re.findall(r'<td [^>]*class="([^"]*)"\s*>([^<]*)</td>', grid)}
    # mean scores are levels without a test: no cell is bold (bold needs a significant cell) and none is "n.s."
    assert len(by_text) == 4 and not any("best" in cls for cls in by_text.values())
    assert "n.s." not in grid and "levels without a test: no cell is bold" in html


def test_grid_says_showing_k_of_n_and_holds_the_rest_behind_show_all(store, monkeypatch):
    from iqabench.reports import render as render_module

    monkeypatch.setattr(render_module, "MAX_GRID_ROWS", 12)
    refs = [ImageRef(SMALL, f"prompt {i} (seed 0)", {"piqe": float(i)}, "g") for i in range(15)]
    save_result(store, "run-a", Result("scores", grids={"samples": refs}))
    html = render_html(store, ["run-a"])
    assert "Showing 8 of 15 rows" in html
    more = html.split('<details class="grid-more">')[1].split("</details>")[0]
    assert "Show all 12 rows that fit in this page" in more and "prompt 11 (seed 0)" in more
    assert "prompt 12 (seed 0)" not in html and "holds 12 of 15 rows" in html


def test_smoke_warning_is_at_the_top_and_figures_have_captions(store):
    result = make_result()
    result.notes.insert(0, "Smoke run: tiny-sd use randomly initialised tiny models built in-process.")
    result.figures["relgain_heatmap"].set_label("RelGain (%) per generator and metric; hatched: CI includes 0.")
    save_result(store, "run-a", result)
    html = render_html(store, ["run-a"])
    assert html.index('class="smoke"') < html.index('<section class="overview">')
    assert html.count("randomly initialised") == 1  # moved, not repeated among the notes
    captions = re.findall(r'<figure class="plot">.*?<figcaption>(.*?)</figcaption>', html, re.DOTALL)
    assert captions and "hatched: CI includes 0." in captions[0]
    document = json.loads((store.run_dir("run-a") / "results" / "result.json").read_text())
    assert document["figures"][0]["caption"].startswith("RelGain (%) per generator")


def test_table_footnote_names_the_ci_method_in_the_html(store):
    result = _relgain_result()
    save_result(store, "run-a", result)
    html = render_html(store, ["run-a"])
    table_part = html.split("<h3>Table: relgain</h3>")[1]
    assert table_part.index('class="footnote"') < table_part.index("</section>")
    assert "BCa bootstrap over images" in table_part.split("</table>")[1][:400]


def test_header_lists_only_metrics_the_run_used(store):
    manifest = store.read_run_json("run-b")
    store.write_run_json("run-b", manifest | {"metrics": {}})  # GenEval scores no IQA metric
    save_result(store, "run-b", Result("geneval", summary={"generators": ["sd15"]}))
    html = render_html(store, ["run-b"])
    assert "piqe" not in html.split("<details")[0]  # the spec's default metrics are not claimed


def test_latex_exports_escape_captions_and_carry_bold_best_and_ns(store):
    from iqabench.reports.tables import to_latex

    plain = pd.DataFrame({"generator": ["a"], "score": [1.0]})
    caption = to_latex(plain, "t", "a_b 50% #1 {x} ~ ^ $ &").split("\\caption{")[1].split("}\n")[0]
    assert "a\\_b 50\\% \\#1 \\{x\\}" in caption and "\\textasciitilde" in caption and "\\$ \\&" in caption
    save_result(store, "run-a", _relgain_result("a_b 50% #1 {x}"))
    tex = (store.run_dir("run-a") / "results" / "relgain.headline.tex").read_text()  # the grid as in the report
    # bold = the best significant cell per column (Holm), as in the HTML
    assert "\\textbf{8.0 [4.0, 12.0]}" in tex and "\\textbf{$-$1.00 [$-$3.00, $-$0.50]}" in tex
    assert "5.00 [1.00, 9.00] n.s." in tex and "\\textbf{5.00" not in tex
    assert "2.2 [$-$7.0, 11.0] n.s." in tex and "\\textbf{2.2" not in tex
    table_tex = (store.run_dir("run-a") / "results" / "relgain.tex").read_text()
    assert "5.00 [1.00, 9.00] n.s." in table_tex and "8.0 [4.0, 12.0] n.s." not in table_tex
    assert "a\\_b 50\\% \\#1 \\{x\\}" in tex and "g<2>" in tex and "\\toprule" in tex


def test_summary_booleans_read_yes_no():
    from iqabench.reports.render import _summary_items

    items = dict(_summary_items({"smoke_run": True, "flags": {"a": False}, "n": 3}))
    assert items["smoke run"] == "yes" and items["flags"] == "a: no" and items["n"] == "3"
