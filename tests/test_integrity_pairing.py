"""Issue 26, item 4: `report A B` pairs items by content (prompt text, seed), never by prompt file name and row
index: two runs over *different* prompts from files with the same name are not paired (a note says so), and the
same prompts in another order (other prompt ids) are paired with their own counterparts."""

import numpy as np
import pandas as pd
import pytest

from iqabench.analysis.compare import paired_differences
from iqabench.contracts.results import PerItemScores, Result
from iqabench.reports import save_result
from iqabench.reports.compare import render_comparison, resolve_run
from iqabench.reports.persist import load_result
from iqabench.store.store import Store


def _per_item(rows: pd.DataFrame) -> PerItemScores:
    """The per-image scores a scores run carries (the table the comparison pairs)."""
    long = rows.melt(id_vars=[c for c in ("generator", "prompt_id", "prompt", "seed") if c in rows],
                     value_vars=[c for c in ("piqe", "entropy") if c in rows], var_name="metric", value_name="score")
    return PerItemScores(long.assign(condition="", lower_better=long.metric.eq("piqe")))

SEEDS = [0, 1]


def _run(store: Store, run_id: str, generator: str, texts: list[str], piqe_by_text: dict[str, float]) -> None:
    """A scores run over ``texts`` read from a file called prompts.txt (prompt ids prompts.txt:<row>)."""
    rows = [{"generator": generator, "prompt_id": f"prompts.txt:{i}", "prompt": text, "seed": seed,
             "piqe": piqe_by_text[text] + seed * 0.1 + (0.37 * i % 0.2), "entropy": 6.0 + 0.01 * i + 0.001 * seed}
            for i, text in enumerate(texts) for seed in SEEDS]
    store.write_run_json(run_id, {"run_id": run_id, "benchmark": "scores", "status": "complete",
                                  "spec": {"benchmark": "scores", "generators": [generator]}})
    frame = pd.DataFrame(rows)
    save_result(store, run_id, Result("scores", tables={"scores_per_item": frame}, per_item=_per_item(frame)))


TEXTS = [f"a photo of object {i}" for i in range(6)]
SCORE = {t: 20.0 + 3 * i for i, t in enumerate(TEXTS)}


def test_same_file_name_different_prompts_are_not_paired_and_a_note_says_so(tmp_path):
    store = Store(tmp_path / "s")
    other_texts = [f"a drawing of thing {i}" for i in range(6)]
    _run(store, "a", "sd15", TEXTS, SCORE)
    _run(store, "b", "sdxl", other_texts, {t: 25.0 for t in other_texts})
    table = paired_differences({r: load_result(store, r) for r in ("a", "b")})
    assert table.frame.empty  # on main: 2 "paired" rows built from unrelated prompts
    assert "Compared unpaired" in table.footnote and "sdxl (b) vs sd15 (a)" in table.footnote
    html = render_comparison([resolve_run(r, store.root) for r in ("a", "b")]).read_text()
    assert "No paired differences" in html and "Compared unpaired" in html


def test_same_prompts_in_another_order_are_paired_by_text(tmp_path):
    store = Store(tmp_path / "s")
    _run(store, "a", "sd15", TEXTS, SCORE)
    _run(store, "b", "sdxl", TEXTS[::-1], {t: v - 1.0 for t, v in SCORE.items()})  # 1 point better on each text
    table = paired_differences({r: load_result(store, r) for r in ("a", "b")}).frame.set_index("metric")
    row = table.loc["piqe"]
    assert row.n_images == 12 and row.n_units == 6
    # by text, every pair differs by ~1 (plus the small per-row jitter); by row index it would be a mix of +-15
    assert row.difference == pytest.approx(1.0, abs=0.25)
    assert row.win_rate == pytest.approx(1.0, abs=0.2)


def test_item_without_prompt_text_is_not_paired_by_index(tmp_path):
    store = Store(tmp_path / "s")
    for run_id in ("a", "b"):
        frame = pd.DataFrame({"generator": run_id, "prompt_id": ["f.txt:0", "f.txt:1", "f.txt:2"], "seed": 0,
                              "piqe": np.arange(3.0) + (run_id == "b")})
        store.write_run_json(run_id, {"run_id": run_id, "benchmark": "scores", "status": "complete"})
        save_result(store, run_id, Result("scores", tables={"scores_per_item": frame}, per_item=_per_item(frame)))
    assert paired_differences({r: load_result(store, r) for r in ("a", "b")}).frame.empty
