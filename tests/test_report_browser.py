"""The rendered report in headless Chromium: loads from disk with no console errors and shows its tables.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the Python
package ``selenium``; without them these tests are skipped with the install command (they FAIL when CI is set).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from browser import chromium  # noqa: F401  (pytest fixture)
from PIL import Image

from iqabench.analysis.plotting import heatmap_figure
from iqabench.contracts.results import ImageRef, Result
from iqabench.reports import render_report, save_result
from iqabench.store.store import Store, content_key

# markup that would set window.__pwned if the report failed to escape it (and CSP let it through)
HOSTILE_PROMPT = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.fixture()
def report(tmp_path):
    store = Store(tmp_path / "store")
    key = content_key("img")
    store.put_image(key, Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)))
    store.write_run_json("r1", {"spec": {"benchmark": "relgain", "generators": ["tiny-sd"]}, "status": "complete"})
    scores = pd.DataFrame(
        {
            "generator": ["b-gen", "a-gen", "c-gen"],
            "piqe": [20.0, 35.5, 10.25],
            "piqe_ci_low": [18.0, 33.0, 9.0],
            "piqe_ci_high": [22.0, 38.0, 11.5],
        }
    )
    matrix = pd.DataFrame([[1.5, -2.0]], index=pd.Index(["tiny-sd"], name="generator"), columns=["piqe", "entropy"])
    result = Result(
        "relgain",
        tables={"scores": scores},
        figures={"relgain": heatmap_figure(matrix, "RelGain (%)")},
        grids={"samples": [ImageRef(key, HOSTILE_PROMPT, {"piqe": 20.0}, "tiny-sd")]},
        summary={"relgain_mean": -0.25},
        notes=["a caveat"],
    )
    save_result(store, "r1", result)
    return render_report(store, ["r1"])


def _column(chromium, table_css: str, index: int) -> list[str]:  # noqa: F811
    rows = chromium.find_all(f"{table_css} tbody tr")
    return [row.find_elements("css selector", "th, td")[index].text for row in rows]


def test_report_opens_without_console_errors_and_shows_the_table(chromium, report):  # noqa: F811
    page = chromium.open(report)
    assert page.console_errors() == []
    assert chromium.driver.title == "iqabench report: relgain r1"
    assert chromium.find_xpath("//td[normalize-space()='35.5 [33.0, 38.0]']").is_displayed()
    assert chromium.find("figure.plot svg").is_displayed()
    thumb = chromium.find("figure.thumb img")
    assert chromium.run_js("return arguments[0].complete && arguments[0].naturalWidth", thumb) == 96
    assert chromium.run_js("return window.__pwned === undefined") is True
    assert HOSTILE_PROMPT in chromium.find("table.grid th.caption").text


def test_sort_buttons_reorder_rows_without_errors(chromium, report):  # noqa: F811
    page = chromium.open(report)
    table = "section.run table.sortable"
    assert _column(chromium, table, 0) == ["b-gen", "a-gen", "c-gen"]
    piqe = chromium.find_all(f"{table} thead button.sort")[1]
    piqe.click()
    assert _column(chromium, table, 0) == ["c-gen", "b-gen", "a-gen"]  # numeric ascending: 10.25, 20, 35.5
    piqe.click()
    assert _column(chromium, table, 0) == ["a-gen", "b-gen", "c-gen"]
    assert page.console_errors() == []


def test_console_error_detection_catches_a_broken_page(chromium, tmp_path):  # noqa: F811
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body><p>hi</p>"
        "<script>console.error('deliberate console error');</script>"
        "<script>definitelyNotDefined();</script></body></html>"
    )
    errors = chromium.open(broken).console_errors()
    assert any("deliberate console error" in e for e in errors), errors
    assert any("definitelyNotDefined" in e for e in errors), errors
    # the next page starts with a clean log
    clean = tmp_path / "clean.html"
    clean.write_text("<!DOCTYPE html><html><head><title>ok</title></head><body>ok</body></html>")
    assert chromium.open(clean).console_errors() == []


def _wide_report(tmp_path, run_id: str, generator: str, store: Store | None = None):
    """A run with a wide table, a long grid, a figure and a per-item table, as a real benchmark writes them."""
    store = store or Store(tmp_path / "store")
    key = content_key("img", run_id)
    store.put_image(key, Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    store.write_run_json(run_id, {"spec": {"benchmark": "scores", "generators": [generator]}, "status": "complete",
                                  "metrics": {"piqe": "fp"}})
    wide = pd.DataFrame({"generator": [generator * 3], **{f"a_very_long_column_name_{i}": [1234.5678 * i]
                                                           for i in range(30)}})
    scores = pd.DataFrame({"generator": [generator, generator], "metric": ["piqe", "entropy"],
                           "direction": ["lower is better", "higher is better"], "score": [30.0, 7.0],
                           "score_ci_low": [29.0, 6.9], "score_ci_high": [31.0, 7.1]})
    per_item = pd.DataFrame({"generator": generator, "prompt_id": [f"p{i}" for i in range(4) for _ in (0, 1)],
                             "prompt": "a cat", "seed": [0, 1] * 4, "piqe": np.arange(8.0) + 20,
                             "entropy": np.linspace(6, 7, 8)})
    matrix = pd.DataFrame([[1.5, -2.0]], index=pd.Index([generator], name="generator"),
                          columns=pd.Index(["piqe", "entropy"], name="metric"))
    from iqabench.analysis.decisions import long_headline
    from iqabench.contracts.results import PerItemScores

    head = long_headline("scores", scores, row_key="generator", column_key="metric", value="score", quantity="score",
                         signed=False, higher_better={"piqe": False, "entropy": True}, n_units_column=None)
    long = per_item.melt(id_vars=["generator", "prompt_id", "prompt", "seed"], value_vars=["piqe", "entropy"],
                         var_name="metric", value_name="score")
    result = Result("scores", tables={"scores": scores, "wide": wide, "scores_per_item": per_item},
                    headlines=[head], per_item=PerItemScores(long.assign(condition="",
                                                                         lower_better=long.metric == "piqe")),
                    figures={"relgain": heatmap_figure(matrix, "RelGain (%)", low=matrix - 3, high=matrix + 3)},
                    grids={"samples": [ImageRef(key, f"prompt {i} " + "long words " * 8, {"piqe": 1.0}, generator)
                                       for i in range(20)]},
                    notes=["Smoke run: tiny models."])
    save_result(store, run_id, result)
    return store


def test_nothing_is_wider_than_a_1280_px_viewport_and_every_figure_has_a_caption(chromium, tmp_path):  # noqa: F811
    store = _wide_report(tmp_path, "r1", "tiny-sd[steps=2,guidance_scale=7.5]")
    page = chromium.open(render_report(store, ["r1"]))
    chromium.set_width(1280)
    assert chromium.run_js("return window.innerWidth;") == 1280
    assert chromium.overflowing() == []
    figures = chromium.find_all("figure.plot")
    assert figures and all(f.find_element("css selector", "figcaption").text.strip() for f in figures)
    assert "Hatched" in figures[0].text or "hatched" in figures[0].text
    assert chromium.find("p.smoke").location["y"] < chromium.find("section.overview").location["y"]
    assert "Showing 8 of 20 rows" in chromium.find("p.grid-count").text
    chromium.click("details.grid-more > summary")
    assert chromium.find_xpath("//th[contains(., 'prompt 19')]").is_displayed()
    assert chromium.overflowing() == []  # the opened grid scrolls inside its own box too
    assert page.console_errors() == []


def test_overflow_check_catches_a_page_that_is_too_wide(chromium, tmp_path):  # noqa: F811
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html><body><div style="width:2000px">wide</div></body></html>')
    chromium.open(page)
    chromium.set_width(1280)
    assert chromium.overflowing()


def test_comparison_report_shows_both_runs_generators(chromium, tmp_path):  # noqa: F811
    from iqabench.reports.compare import RunRef, render_comparison

    store = _wide_report(tmp_path, "run-a", "sd15")
    _wide_report(tmp_path, "run-b", "iqa-adapter:topiq", store=store)
    path = render_comparison([RunRef(store, "run-a"), RunRef(store, "run-b")])
    page = chromium.open(path)
    chromium.set_width(1280)
    merged = chromium.find("section.comparison table.headline").text
    assert "sd15 (run-a)" in merged and "iqa-adapter:topiq (run-b)" in merged
    assert "Paired differences against run-a" in chromium.find("section.comparison").text
    assert chromium.overflowing() == []
    assert page.console_errors() == []


def test_comparison_key_columns_are_visible_at_1280_px_without_scrolling_sideways(chromium, tmp_path):  # noqa: F811
    """Issue 27: estimate, CI, p and Holm-adjusted p of the paired table sit inside a 1280 px viewport (they were
    only reachable by scrolling the table sideways)."""
    from test_report_compare import _scores_run

    from iqabench.reports.compare import RunRef, render_comparison

    store = Store(tmp_path / "store")
    _scores_run(store, "run-a", "iqa-adapter:/home/someone/checkpoints/adapter_a.safetensors[scale=0.5]", 0.0,
                "2026-01-01T10:00:00+00:00")
    _scores_run(store, "run-bb", "iqa-adapter:/home/someone/checkpoints/adapter_b.safetensors[scale=0.5]", 2.0,
                "2026-01-02T10:00:00+00:00")
    page = chromium.open(render_comparison([RunRef(store, "run-a"), RunRef(store, "run-bb")]))
    chromium.set_width(1280)
    table = chromium.find_xpath("//h3[contains(., 'Paired differences')]/following::table[1]")
    headers = [th.text.replace("\n", " ") for th in table.find_elements("css selector", "thead th")]
    for column in ("difference", "p (Holm)", "t p", "Wilcoxon p"):
        assert column in headers, headers
    right = chromium.run_js("var r = arguments[0].getBoundingClientRect(); return r.right;", table)
    scroll = chromium.run_js("var s = arguments[0].closest('.scroll'); return s.scrollWidth - s.clientWidth;", table)
    assert right <= 1280 and scroll <= 0  # the whole table, key columns included, is in view without scrolling
    assert chromium.overflowing() == [] and page.console_errors() == []
