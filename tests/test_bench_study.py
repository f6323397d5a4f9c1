"""Subjective-study kit: votes -> exclusion, win rates, pairwise matrix, shares, Bradley-Terry; the exported
page clicked through in headless Chromium, its votes re-imported; the Typer commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from browser import chromium  # noqa: F401  (pytest fixture)
from typer.testing import CliRunner

from iqabench.api import run
from iqabench.benchmarks.study import (
    analyze_study,
    bradley_terry,
    collect_conditions,
    export_study,
    load_votes,
    pairwise_matrix,
    verification_report,
    vote_outcomes,
    vote_shares,
    win_rates,
)
from iqabench.benchmarks.study.analyze import fit_bradley_terry
from iqabench.contracts.specs import RunSpec


def _manifest() -> dict:
    pairs = [
        {"pair_id": "q1", "left": "A", "right": "B", "verification": False},
        {"pair_id": "q2", "left": "C", "right": "A", "verification": False},
        {"pair_id": "q3", "left": "B", "right": "C", "verification": False},
        {"pair_id": "c1", "left": "check:original", "right": "check:degraded", "verification": True,
         "expected": "left"},
        {"pair_id": "c2", "left": "check:degraded", "right": "check:original", "verification": True,
         "expected": "right"},
    ]
    return {"format": "iqabench-study/v1", "study_id": "s1", "pairs": pairs, "conditions": ["A", "B", "C"]}


def _votes() -> pd.DataFrame:
    table = {  # participant -> choices for q1, q2, q3, c1, c2
        "p1": ["left", "right", "equal", "left", "right"],    # A>B, A>C, B=C ; checks ok
        "p2": ["left", "equal", "left", "left", "right"],     # A>B, A=C, B>C ; checks ok
        "p3": ["right", "left", "right", "right", "right"],   # B>A, C>A, C>B ; fails c1 -> excluded
    }
    ids = ["q1", "q2", "q3", "c1", "c2"]
    return pd.DataFrame([{"participant": p, "pair_id": i, "choice": c}
                         for p, choices in table.items() for i, c in zip(ids, choices, strict=True)])


def test_participant_failing_a_verification_pair_is_excluded():
    report = verification_report(_manifest(), _votes()).set_index("participant")
    assert report.n_checks.tolist() == [2, 2, 2] and report.n_votes.tolist() == [3, 3, 3]
    assert report.n_failed_checks.tolist() == [0, 0, 1]
    assert report.excluded.tolist() == [False, False, True]
    assert not verification_report(_manifest(), _votes(), max_failed_checks=1).excluded.any()


def test_win_rates_matrix_and_shares_on_a_hand_made_vote_table():
    votes = _votes()
    outcomes = vote_outcomes(_manifest(), votes[votes.participant != "p3"])
    assert len(outcomes) == 6
    rates = win_rates(outcomes).set_index("condition")
    # A: 2 wins vs B, 1 win + 1 tie vs C -> 3.5 / 4;  B: 0 vs A, 1 tie + 1 win vs C -> 1.5 / 4;  C: 1 / 4
    assert rates.win_rate.to_dict() == pytest.approx({"A": 0.875, "B": 0.375, "C": 0.25})
    assert rates.loc["A", ["wins", "ties", "losses"]].tolist() == [3, 1, 0]
    matrix = pairwise_matrix(outcomes)
    assert matrix.loc["A", "B"] == 1.0 and matrix.loc["B", "A"] == 0.0
    assert matrix.loc["A", "C"] == 0.75 and matrix.loc["B", "C"] == 0.75 and matrix.loc["C", "B"] == 0.25
    assert np.isnan(matrix.loc["A", "A"])
    shares = vote_shares(outcomes).set_index(["a", "b"])
    assert shares.loc[("A", "C")].tolist() == [2, 0.5, 0.5, 0.0]  # n, share_a, share_equal, share_b
    full = analyze_study_from_frames(votes)
    assert full.summary["n_excluded"] == 1 and full.summary["n_votes"] == 6
    assert full.summary["win_rate"] == pytest.approx({"A": 0.875, "B": 0.375, "C": 0.25})


def analyze_study_from_frames(votes):
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    (folder / "study.json").write_text(json.dumps(_manifest()))
    votes.to_csv(folder / "votes.csv", index=False)
    return analyze_study(folder, [folder / "votes.csv"], n_boot=50)


def test_bradley_terry_two_conditions_is_the_log_odds():
    outcomes = pd.DataFrame({"participant": ["x", "y", "x", "y"], "pair_id": list("abcd"), "a": ["A"] * 4,
                             "b": ["B"] * 4, "score_a": [1.0, 1.0, 1.0, 0.0], "choice": ["left"] * 4})
    table, notes = bradley_terry(outcomes, n_boot=100)
    scores = table.set_index("condition").bt_score
    assert scores["A"] - scores["B"] == pytest.approx(np.log(3.0), abs=1e-6)
    assert scores.sum() == pytest.approx(0.0, abs=1e-9)
    assert not any("pseudo-wins" in n for n in notes)


def test_bradley_terry_matches_a_direct_likelihood_maximisation():
    from scipy.optimize import minimize

    wins = np.array([[0, 4, 3, 2], [1, 0, 2, 3], [2, 3, 0, 1.5], [1, 2, 2.5, 0]], dtype=float)

    def nll(free):
        s = np.concatenate([[0.0], free])
        diff = s[:, None] - s[None, :]
        return float((wins * np.log1p(np.exp(-diff))).sum())

    direct = np.concatenate([[0.0], minimize(nll, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x])
    assert fit_bradley_terry(wins) == pytest.approx(direct - direct.mean(), abs=1e-5)


def test_bradley_terry_without_a_finite_mle_uses_a_stated_prior():
    outcomes = pd.DataFrame({"participant": ["x"] * 3, "pair_id": list("abc"), "a": ["A", "A", "B"],
                             "b": ["B", "C", "C"], "score_a": [1.0, 1.0, 1.0], "choice": ["left"] * 3})
    table, notes = bradley_terry(outcomes, n_boot=50)
    assert np.isfinite(table.bt_score).all() and table.condition.tolist() == ["A", "B", "C"]
    assert any("pseudo-wins" in n for n in notes)


def test_vote_files_are_validated(tmp_path):
    good = tmp_path / "v.json"
    good.write_text(json.dumps({"study_id": "s1", "participant": "p", "votes": [{"pair_id": "q1", "choice": "Left"}]}))
    assert load_votes([good]).choice.tolist() == ["left"]
    bad = tmp_path / "bad.csv"
    bad.write_text("participant,pair_id,choice\np,q1,maybe\n")
    with pytest.raises(ValueError, match="left, right or equal"):
        load_votes([bad])
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("participant,pair_id,choice\np,zz9,left\n")
    with pytest.raises(ValueError, match="not in this study"):
        verification_report(_manifest(), load_votes([unknown]))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"study_id": "s2", "participant": "p", "votes": [{"pair_id": "q1", "choice": "left"}]}))
    with pytest.raises(ValueError, match="from study 's2'"):
        verification_report(_manifest(), load_votes([other]))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A real run (tiny-sd vs its baseline, 2 prompts) exported as a study with 2 verification pairs."""
    root = tmp_path_factory.mktemp("study")
    outcome = run(RunSpec("relgain", ["tiny-sd[steps=2]"], metrics=["entropy"], limit=2, seeds=[0], batch_size=2),
                  out=root / "store", report=False)
    from iqabench.store.store import Store

    store = Store(root / "store")
    images = collect_conditions(store, [outcome.run_id])
    assert len(images) == 4 and images.condition.nunique() == 2
    page = export_study(store, images, root / "page", n_verification=2, seed=3, run_ids=[outcome.run_id])
    return root, page, json.loads((root / "page" / "study.json").read_text()), outcome.run_id


def _loaded_width(chromium, element_id: str, timeout: float = 10.0) -> int:  # noqa: F811
    """The image's natural width once the browser has decoded it (0 until then)."""
    import time

    deadline = time.time() + timeout
    script = f"const i = document.getElementById('{element_id}'); return i.complete ? i.naturalWidth : 0"
    width = chromium.run_js(script)
    while not width and time.time() < deadline:
        time.sleep(0.05)
        width = chromium.run_js(script)
    return width


def _vote_through(chromium, page, participant, answers):  # noqa: F811
    chromium.open(page)
    chromium.find("#participant").send_keys(participant)
    chromium.click("#start")
    for answer in answers:
        assert _loaded_width(chromium, "left-img") == 64
        chromium.click(f"#choose-{answer}")
    return json.loads(chromium.find("#votes-json").get_attribute("value"))


def test_study_page_votes_click_through_save_and_reimport(chromium, study, tmp_path):  # noqa: F811
    root, page, manifest, _ = study
    pairs = manifest["pairs"]
    assert len(pairs) == 4 and sum(p["verification"] for p in pairs) == 2
    html = page.read_text("utf-8")
    assert "tiny-sd" not in html  # blind: the page never names the conditions
    careful = [p["expected"] if p["verification"] else "left" for p in pairs]
    careless = [("right" if p["expected"] == "left" else "left") if p["verification"] else "right" for p in pairs]

    page_obj = chromium.open(page)
    chromium.find("#participant").send_keys("alice")
    chromium.click("#start")
    chromium.click(f"#choose-{careful[0]}")
    assert chromium.find("#progress").text == "2 / 4"
    chromium.open(page)  # reload: progress is kept in localStorage
    chromium.find("#participant").send_keys("alice")
    chromium.click("#start")
    assert chromium.find("#progress").text == "2 / 4"
    for answer in careful[1:]:
        chromium.click(f"#choose-{answer}")
    alice = json.loads(chromium.find("#votes-json").get_attribute("value"))
    assert chromium.find("#download").get_attribute("download") == "votes-alice.json"
    assert page_obj.console_errors() == []
    bob = _vote_through(chromium, page, "bob", careless)
    assert [v["choice"] for v in alice["votes"]] == careful and alice["study_id"] == manifest["study_id"]
    assert [v["pair_id"] for v in bob["votes"]] == [p["pair_id"] for p in pairs]

    files = []
    for name, data in (("alice", alice), ("bob", bob)):
        files.append(tmp_path / f"votes-{name}.json")
        files[-1].write_text(json.dumps(data))
    result = analyze_study(root / "page", files, n_boot=50)
    report = result.tables["participants"].set_index("participant")
    assert report.excluded.to_dict() == {"alice": False, "bob": True}
    study_pairs = [p for p in pairs if not p["verification"]]
    expected = pd.DataFrame([{"condition": p[side], "win": float(side == "left")}  # alice always chose left
                             for p in study_pairs for side in ("left", "right")]).groupby("condition").win.mean()
    rates = result.tables["win_rates"].set_index("condition").win_rate
    assert rates.sort_index().tolist() == pytest.approx(expected.sort_index().tolist())
    assert result.summary["n_votes"] == len(study_pairs)


def test_typer_commands_export_and_analyze(study, tmp_path):
    root, _, manifest, run_id = study
    # through the real CLI: the commands catch nothing, the one error boundary (BoundaryGroup) prints the sentence
    from iqabench.cli import app

    runner = CliRunner()
    exported = runner.invoke(app, ["study", "export", run_id, "--out", str(root / "store"), "--dest",
                                   str(tmp_path / "s"), "--n-verification", "1", "--seed", "3"])
    assert exported.exit_code == 0, exported.output
    assert "2 pairs + 1 verification pairs over 2 conditions" in exported.output
    pairs = json.loads((tmp_path / "s" / "study.json").read_text())["pairs"]
    votes = tmp_path / "votes.csv"
    votes.write_text("participant,pair_id,choice\n" + "".join(
        f"{who},{p['pair_id']},{p.get('expected', 'equal')}\n" for who in ("u1", "u2") for p in pairs))
    analyzed = runner.invoke(app, ["study", "analyze", str(tmp_path / "s"), str(votes), "--n-boot", "20"])
    assert analyzed.exit_code == 0, analyzed.output
    assert "win rate 0.500" in analyzed.output and "report:" in analyzed.output
    report = analyzed.output.split("report:")[1].strip()
    assert "bradley_terry" in open(report, encoding="utf-8").read()
    missing = runner.invoke(app, ["study", "analyze", str(tmp_path / "nowhere"), str(votes)])
    assert missing.exit_code == 2 and "no study manifest" in missing.output
