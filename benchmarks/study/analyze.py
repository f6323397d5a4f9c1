"""Analyse the votes of a pair-voting study: exclusion, win rates, pairwise matrix, vote shares, Bradley-Terry.

Conventions (paper Sec. 4.3.1 / Fig. 3b-c):

* a tie ("equal") counts as half a win for each side in win rates, in the
  pairwise matrix and in Bradley-Terry (the usual Rao-Kupper-free shortcut);
* a participant who answers a verification pair wrongly (the degraded image,
  or "equal") more than ``max_failed_checks`` times is excluded entirely;
* Bradley-Terry strengths are fitted with Hunter's (2004) MM algorithm and
  reported as log-strengths centred to mean 0 (a difference of ln 3 means
  "preferred 3 to 1"); 95% CIs come from a bootstrap over participants (votes
  of one person are not independent), or over votes when there is one person.
  The maximum-likelihood fit exists only when the comparison graph is strongly
  connected (every condition both wins and loses against the rest); otherwise a
  prior of 0.5 pseudo-wins per compared pair and direction is added and a note
  says so.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqabench.analysis.stats import describe_method, mean_ci, unit_test
from iqabench.benchmark import Result
from iqabench.contracts.errors import UserInputError
from iqabench.store.run_folders import RunFolderError, read_json_document, typed_field

CHOICES = ("left", "right", "equal")
BT_PRIOR_WHEN_DEGENERATE = 0.5


def load_manifest(study: str | os.PathLike[str]) -> dict[str, Any]:
    """``study.json`` from a study folder (or the file itself)."""
    path = Path(study)
    path = path / "study.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no study manifest at {path}: pass the folder `iqabench study export` wrote")
    manifest = read_json_document(path)  # bounded, an object, not nested absurdly
    if manifest.get("format") != "iqabench-study/v1":
        raise UserInputError(f"{path} is not an iqabench study manifest (format {manifest.get('format')!r})")
    pairs = typed_field(manifest, "pairs", list, path, [])
    if not all(isinstance(p, dict) and "pair_id" in p for p in pairs):
        raise RunFolderError(f"{path}: an entry of 'pairs' is not an object with a pair_id; the file is damaged")
    return manifest


def _rows_from_json(data: Any, source: str) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [row for entry in data for row in _rows_from_json(entry, source)]
    if isinstance(data, dict) and "votes" in data:
        participant = data.get("participant")
        votes = data["votes"]
        if not isinstance(votes, list) or not all(isinstance(v, dict) for v in votes):
            raise UserInputError(f"{source}: 'votes' must be a list of {{pair_id, choice}} objects")
        return [{"participant": v.get("participant", participant), "pair_id": v.get("pair_id"),
                 "choice": v.get("choice"), "study_id": data.get("study_id")} for v in votes]
    if isinstance(data, dict) and "pair_id" in data:
        return [data]
    raise UserInputError(f"{source}: expected the page's votes file ({{'participant', 'votes': [...]}}), a list of "
                         "them, or a list of {participant, pair_id, choice} rows")


def load_votes(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Votes from the page's JSON downloads and/or CSV files with columns participant, pair_id, choice."""
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"no votes file at {path}")
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(io.StringIO(path.read_text("utf-8")))
            missing = {"participant", "pair_id", "choice"} - set(reader.fieldnames or [])
            if missing:
                raise UserInputError(f"{path}: CSV lacks column(s) {', '.join(sorted(missing))} "
                                     "(need participant, pair_id, choice)")
            rows += [dict(r) for r in reader]
        else:
            data = read_json_document(path, top=(dict, list))  # bounded; deep nesting is one sentence
            rows += _rows_from_json(data, str(path))
    votes = pd.DataFrame(rows, columns=sorted({"participant", "pair_id", "choice", "study_id"} |
                                              {k for r in rows for k in r}))
    if votes.empty:
        raise UserInputError("the votes files hold no vote")
    if votes.participant.isna().any() or (votes.participant.astype(str).str.strip() == "").any():
        raise UserInputError("some votes have no participant id")
    votes["participant"] = votes.participant.astype(str).str.strip()
    votes["choice"] = votes.choice.astype(str).str.strip().str.lower()
    bad = sorted(set(votes.choice) - set(CHOICES))
    if bad:
        raise UserInputError(f"unknown choice(s) {', '.join(map(repr, bad))}: each vote must be left, right or equal")
    # a participant who voted twice on a pair (e.g. two downloads) counts once: the last vote wins
    return votes.drop_duplicates(["participant", "pair_id"], keep="last").reset_index(drop=True)


def _check_votes(manifest: dict[str, Any], votes: pd.DataFrame) -> None:
    known = {p["pair_id"] for p in manifest["pairs"]}
    unknown = sorted(set(votes.pair_id) - known)
    if unknown:
        raise UserInputError(f"{len(unknown)} vote(s) name pairs not in this study (e.g. {unknown[0]!r}): "
                             "are the votes from another study export?")
    if "study_id" in votes:
        other = sorted({s for s in votes.study_id.dropna() if s != manifest["study_id"]})
        if other:
            raise UserInputError(f"votes are from study {other[0]!r}, but this study is {manifest['study_id']!r}")


def verification_report(manifest: dict[str, Any], votes: pd.DataFrame, max_failed_checks: int = 0) -> pd.DataFrame:
    """Per participant: votes, verification pairs answered and failed, and whether they are excluded."""
    _check_votes(manifest, votes)
    expected = {p["pair_id"]: p["expected"] for p in manifest["pairs"] if p.get("verification")}
    rows = []
    for participant, group in votes.groupby("participant", sort=True):
        checks = group[group.pair_id.isin(expected)]
        failed = int((checks.choice != checks.pair_id.map(expected)).sum())
        rows.append({"participant": participant, "n_votes": int(len(group) - len(checks)),
                     "n_checks": int(len(checks)), "n_failed_checks": failed,
                     "excluded": failed > max_failed_checks})
    return pd.DataFrame(rows)


def vote_outcomes(manifest: dict[str, Any], votes: pd.DataFrame) -> pd.DataFrame:
    """Study votes (verification pairs dropped) as (participant, pair_id, a, b, score_a) with a, b the
    conditions in sorted order and score_a = 1 (a preferred), 0.5 (equal) or 0 (b preferred)."""
    _check_votes(manifest, votes)
    pairs = {p["pair_id"]: p for p in manifest["pairs"] if not p.get("verification")}
    rows = []
    for vote in votes.itertuples(index=False):
        pair = pairs.get(vote.pair_id)
        if pair is None:
            continue
        left, right = pair["left"], pair["right"]
        left_score = {"left": 1.0, "right": 0.0, "equal": 0.5}[vote.choice]
        a, b = sorted((left, right))
        rows.append({"participant": vote.participant, "pair_id": vote.pair_id, "a": a, "b": b,
                     "score_a": left_score if a == left else 1.0 - left_score, "choice": vote.choice})
    return pd.DataFrame(rows, columns=["participant", "pair_id", "a", "b", "score_a", "choice"])


def _per_condition_scores(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Each vote twice, once from each side: (participant, condition, opponent, score)."""
    a_side = outcomes.assign(condition=outcomes.a, opponent=outcomes.b, score=outcomes.score_a)
    b_side = outcomes.assign(condition=outcomes.b, opponent=outcomes.a, score=1.0 - outcomes.score_a)
    return pd.concat([a_side, b_side], ignore_index=True)[["participant", "condition", "opponent", "score"]]


def win_rates(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Overall win rate per condition over all its comparisons (ties = half), with a 95% bootstrap CI."""
    sides = _per_condition_scores(outcomes)
    rows = []
    for condition, group in sides.groupby("condition", sort=True):
        scores = group.score.to_numpy(float)
        # one participant's votes are not independent: resample participants (cluster bootstrap)
        est = mean_ci(scores, group.participant.to_numpy())
        # 0.5 = no preference: one-sample t of (score - 0.5) on per-participant means (the CI's unit)
        test = unit_test(scores - 0.5, group.participant.to_numpy())
        low, high = est.ci_low, est.ci_high
        rows.append({"condition": condition, "n": int(scores.size), "wins": int((scores == 1).sum()),
                     "ties": int((scores == 0.5).sum()), "losses": int((scores == 0).sum()),
                     "win_rate": float(scores.mean()), "win_rate_ci_low": low, "win_rate_ci_high": high,
                     "p_value": test.p_value, "n_units": test.n_units,
                     "unit": "participant" if test.unit == "prompt" else "vote", "ci_method": est.method})
    return pd.DataFrame(rows).sort_values("win_rate", ascending=False, ignore_index=True)


def win_rate_table(out: pd.DataFrame):
    """The win rates typed: ``win_rate`` is an effect around 0.5 (no preference), Holm over the conditions."""
    from iqabench.analysis.decisions import decision_sentence, effect_table

    unit = "/".join(dict.fromkeys(out["unit"])) if len(out) else ""
    note = (describe_method(out["ci_method"].tolist(), cluster="participants (cluster bootstrap)")
            + f" Inference unit: the {unit or 'participant'} (n_units). p_value: one-sample t-test of win rate 0.5 "
            "(no preference) on per-participant mean scores. " + decision_sentence())
    return effect_table(out, {"win_rate": "p_value"}, footnote=note, unit=unit)


def pairwise_matrix(outcomes: pd.DataFrame, conditions: Sequence[str] | None = None) -> pd.DataFrame:
    """M[row, col] = share of row-vs-col votes won by row (ties half); NaN where never compared."""
    sides = _per_condition_scores(outcomes)
    conditions = list(conditions or sorted(set(sides.condition)))
    matrix = sides.pivot_table(index="condition", columns="opponent", values="score", aggfunc="mean")
    matrix = matrix.reindex(index=conditions, columns=conditions)
    matrix.index.name, matrix.columns.name = "condition", "opponent"
    return matrix


def pairwise_with_ci(outcomes: pd.DataFrame, conditions: Sequence[str] | None = None) -> pd.DataFrame:
    """The pairwise matrix with a 95% CI per cell: row ``condition``, then per opponent its win rate and
    ``<opponent>_ci_low`` / ``<opponent>_ci_high`` (the report shows ``est [low, high]``).

    Each cell's CI is :func:`iqabench.analysis.stats.mean_ci` over that pair's votes,
    resampling participants (one person's votes are not independent), or votes
    when every participant voted once on the pair. A cell whose CI includes 0.5
    (no preference) is not significant.
    """
    sides = _per_condition_scores(outcomes)
    conditions = list(conditions or sorted(set(sides.condition)))
    estimates = {}
    for (condition, opponent), group in sides.groupby(["condition", "opponent"], sort=False):
        estimates[(condition, opponent)] = mean_ci(group.score.to_numpy(float), group.participant.to_numpy())
    out = pd.DataFrame({"condition": conditions})
    for opponent in conditions:
        picked = [estimates.get((c, opponent)) for c in conditions]
        out[opponent] = [np.nan if e is None else e.value for e in picked]
        out[f"{opponent}_ci_low"] = [np.nan if e is None else e.ci_low for e in picked]
        out[f"{opponent}_ci_high"] = [np.nan if e is None else e.ci_high for e in picked]
    out["ci_method"] = ["; ".join(dict.fromkeys(e.method for (c, _), e in estimates.items() if c == row))
                        for row in conditions]
    return out


def pairwise_footnote(methods: list[str]) -> str:
    return ("Share of the row condition's votes won against the column condition (ties half). "
            + describe_method(methods, cluster="participants (cluster bootstrap)", units="votes")
            + " Descriptive: the tested decision is the win_rates table's (one test per condition).")


def pairwise_figure(table: pd.DataFrame):
    """Heatmap of the pairwise win rates, diverging around 0.5 (no preference), cells annotated with their CI and
    hatched where the CI includes 0.5."""
    from iqabench.analysis.plotting import ci_table_heatmap

    return ci_table_heatmap(
        table, "condition", table["condition"].tolist(), "Win rate of row over column", column_axis="opponent",
        center=0.5, fmt=".2f", spread=0.5,  # a share: the full 0-1 range, so two studies colour alike
        caption="Share of votes the row condition won against the column condition (ties count half), with its 95% "
                "CI (bootstrap over participants); diverging around 0.5, the no-preference point: blue = row "
                "preferred; hatched, faded cells: the CI includes 0.5 (no detectable preference).")


def vote_shares(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per compared pair (a, b): share of votes for a, for b, and 'equal' (Fig. 3c)."""
    rows = []
    for (a, b), group in outcomes.groupby(["a", "b"], sort=True):
        s = group.score_a.to_numpy(float)
        rows.append({"a": a, "b": b, "n": int(s.size), "share_a": float((s == 1).mean()),
                     "share_equal": float((s == 0.5).mean()), "share_b": float((s == 0).mean())})
    return pd.DataFrame(rows)


def _win_matrix(outcomes: pd.DataFrame, conditions: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(conditions)}
    wins = np.zeros((len(conditions), len(conditions)))
    for a, b, s in zip(outcomes.a, outcomes.b, outcomes.score_a, strict=True):
        wins[index[a], index[b]] += s
        wins[index[b], index[a]] += 1.0 - s
    return wins


def _strongly_connected(wins: np.ndarray) -> bool:
    n = wins.shape[0]
    adjacency = wins > 0
    for graph in (adjacency, adjacency.T):
        seen, stack = {0}, [0]
        while stack:
            node = stack.pop()
            for nxt in np.flatnonzero(graph[node]):
                if nxt not in seen:
                    seen.add(int(nxt))
                    stack.append(int(nxt))
        if len(seen) != n:
            return False
    return True


def fit_bradley_terry(wins: np.ndarray, prior: float = 0.0, tol: float = 1e-10, max_iter: int = 10000) -> np.ndarray:
    """Log-strengths (mean 0) maximising sum_ij W_ij log(p_i / (p_i + p_j)); Hunter's MM updates.

    ``prior`` adds that many pseudo-wins in both directions to every pair that
    was compared at least once (a symmetric Beta-like shrinkage toward equality).
    """
    wins = np.asarray(wins, dtype=float).copy()
    compared = (wins + wins.T) > 0
    np.fill_diagonal(compared, False)
    wins += prior * compared
    games = wins + wins.T
    total_wins = wins.sum(axis=1)
    strength = np.ones(wins.shape[0])
    for _ in range(max_iter):
        denom = (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated = np.where(denom > 0, total_wins / np.where(denom > 0, denom, 1.0), strength)
        updated = updated / np.exp(np.mean(np.log(np.maximum(updated, 1e-300))))
        if np.max(np.abs(np.log(np.maximum(updated, 1e-300)) - np.log(strength))) < tol:
            strength = updated
            break
        strength = updated
    scores = np.log(np.maximum(strength, 1e-300))
    return scores - scores.mean()


BT_NOISE = 1e-6  # |log-strength| below this is the fits' convergence noise (bootstrap fits stop at tol 1e-8): 0


def bradley_terry(outcomes: pd.DataFrame, conditions: Sequence[str] | None = None, *, n_boot: int = 500,
                  seed: int = 0, prior: float | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Bradley-Terry log-strengths per condition with 95% bootstrap CIs, and notes on how they were fitted."""
    conditions = list(conditions or sorted(set(outcomes.a) | set(outcomes.b)))
    if len(conditions) < 2 or outcomes.empty:
        raise UserInputError("Bradley-Terry needs votes on at least two conditions")
    notes = []
    wins = _win_matrix(outcomes, conditions)
    if prior is None:
        prior = 0.0
        if not _strongly_connected(wins):
            prior = BT_PRIOR_WHEN_DEGENERATE
            notes.append("Bradley-Terry: some condition never won or never lost, so the maximum-likelihood fit does "
                         f"not exist; {prior:g} pseudo-wins per compared pair and direction were added.")
    scores = fit_bradley_terry(wins, prior)
    # below BT_NOISE a log-strength is numerical noise of the centring (1.973e-11 printed as a
    # result): it is 0, the mean of all conditions
    scores = np.where(np.abs(scores) < BT_NOISE, 0.0, scores)
    rng = np.random.default_rng(seed)
    participants = outcomes.participant.unique()
    by_participant = participants.size > 1
    units = [outcomes[outcomes.participant == p] for p in participants] if by_participant else None
    samples = []
    for _ in range(n_boot):
        if by_participant:
            picked = rng.integers(0, len(units), len(units))
            sample = pd.concat([units[i] for i in picked], ignore_index=True)
        else:
            sample = outcomes.iloc[rng.integers(0, len(outcomes), len(outcomes))]
        boot_wins = _win_matrix(sample, conditions)
        # a resample may lose connectivity; the same small prior keeps it finite
        boot_prior = prior if prior > 0 or _strongly_connected(boot_wins) else BT_PRIOR_WHEN_DEGENERATE
        samples.append(fit_bradley_terry(boot_wins, boot_prior, tol=1e-8))
    samples = np.array(samples)
    low, high = np.quantile(samples, [0.025, 0.975], axis=0)
    low, high = (np.where(np.abs(b) < BT_NOISE, 0.0, b) for b in (low, high))
    notes.append(f"Bradley-Terry CIs: 95% percentile bootstrap ({n_boot} resamples of "
                 f"{'participants' if by_participant else 'votes (one participant)'}).")
    table = pd.DataFrame({"condition": conditions, "bt_score": scores, "ci_low": low, "ci_high": high,
                          "preference_vs_mean": 1.0 / (1.0 + np.exp(-scores))})
    return table.sort_values("bt_score", ascending=False, ignore_index=True), notes


def analyze_study(study: str | os.PathLike[str], votes_paths: Sequence[str | os.PathLike[str]], *,
                  max_failed_checks: int = 0, n_boot: int = 500, seed: int = 0) -> Result:
    """Everything ``iqabench study analyze`` reports, as a Result the HTML report renders."""

    manifest = load_manifest(study)
    votes = load_votes(votes_paths)
    participants = verification_report(manifest, votes, max_failed_checks)
    kept = set(participants.participant[~participants.excluded])
    outcomes = vote_outcomes(manifest, votes[votes.participant.isin(kept)])
    result = Result("study")
    n_excluded = int(participants.excluded.sum())
    result.notes.append(
        f"{len(participants)} participant(s); {n_excluded} excluded for failing more than {max_failed_checks} "
        "verification pair(s) (choosing the degraded image or 'equal'). Ties count as half a win.")
    result.tables["participants"] = participants
    if outcomes.empty:
        result.notes.append("No vote is left after exclusion; nothing to analyse.")
        result.summary = {"study_id": manifest["study_id"], "n_participants": len(participants),
                          "n_excluded": n_excluded, "n_votes": 0}
        return result
    conditions = sorted(set(outcomes.a) | set(outcomes.b))
    rates = win_rates(outcomes)
    bt, bt_notes = bradley_terry(outcomes, conditions, n_boot=n_boot, seed=seed)
    result.notes += bt_notes
    typed = result.add_table("win_rates", win_rate_table(rates))
    if len(rates):
        from iqabench.analysis.decisions import wide_headline

        result.headlines.append(wide_headline(
            "win_rates", typed.frame.assign(win_rate_p=typed.frame.p_value), row_key="condition",
            columns=["win_rate"], quantity="win rate", signed=True, higher_better=True, footnote=typed.footnote,
            unit=typed.unit))
    pairwise = pairwise_with_ci(outcomes, conditions)
    result.add_table("pairwise_win_rate", pairwise, footnote=pairwise_footnote(
        [m for text in pairwise["ci_method"] for m in str(text).split("; ") if m]))
    result.tables["vote_shares"] = vote_shares(outcomes)
    result.tables["bradley_terry"] = bt
    result.tables["votes"] = outcomes
    result.figures["pairwise_win_rate"] = pairwise_figure(pairwise)
    result.figures["bradley_terry"] = _bt_figure(bt)
    result.summary = {
        "study_id": manifest["study_id"], "n_participants": len(participants), "n_excluded": n_excluded,
        "n_votes": int(len(outcomes)), "conditions": conditions,
        "win_rate": dict(zip(rates.condition, rates.win_rate, strict=True)),
        "bt_score": dict(zip(bt.condition, bt.bt_score, strict=True)),
    }
    return result


def _bt_figure(bt: pd.DataFrame):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from iqabench.analysis.labels import figure_labels
    from iqabench.analysis.plotting import style_axes

    fig = Figure(figsize=(6.5, 0.45 * len(bt) + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    order = bt.iloc[::-1]
    y = np.arange(len(order))
    # with few participants a percentile interval need not contain the point estimate; draw what it covers
    below = np.maximum(order.bt_score - order.ci_low, 0.0)
    above = np.maximum(order.ci_high - order.bt_score, 0.0)
    ax.errorbar(order.bt_score, y, xerr=[below, above], fmt="o", capsize=3)
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    labels = figure_labels(order.condition, 45)
    ax.set_yticks(y, [labels[str(c)] for c in order.condition])
    ax.set_xlabel("Bradley-Terry log-strength (95% CI)")
    style_axes(ax)
    fig.tight_layout()
    fig.set_label("Bradley-Terry log-strength of each condition with its 95% bootstrap CI; the fit is centred so "
                  "that the conditions' log-strengths average 0 (0 = the average condition, not a reference "
                  "condition; a difference of ln 3 = preferred 3 to 1); further right = preferred more often.")
    return fig
