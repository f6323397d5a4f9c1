"""Subjective-study kit: export blind side-by-side pair-voting pages, import the votes and analyse them.

IQA-Adapter paper Sec. 4.3.1 and supplementary Sec. 15 (Fig. 3b-c): participants
see two images of the same prompt and seed and pick the better one (or
"equal"); verification pairs with an obvious answer weed out careless
participants. ``export`` writes a static HTML page that needs no server;
``analyze`` computes win rates, pairwise win-rate matrices, vote shares and
Bradley-Terry scores with bootstrap confidence intervals.
"""

from iqabench.support.lazy import lazy_exports

# names load on first use (iqabench/support/lazy.py): importing a submodule such as .cli stays cheap
__getattr__, __dir__ = lazy_exports(__name__, {
    "analyze_study": ".analyze",
    "bradley_terry": ".analyze",
    "load_votes": ".analyze",
    "pairwise_matrix": ".analyze",
    "pairwise_with_ci": ".analyze",
    "pairwise_figure": ".analyze",
    "verification_report": ".analyze",
    "vote_outcomes": ".analyze",
    "vote_shares": ".analyze",
    "win_rates": ".analyze",
    "collect_conditions": ".export",
    "export_study": ".export",
})

__all__ = [
    "analyze_study",
    "bradley_terry",
    "collect_conditions",
    "export_study",
    "load_votes",
    "pairwise_figure",
    "pairwise_matrix",
    "pairwise_with_ci",
    "verification_report",
    "vote_outcomes",
    "vote_shares",
    "win_rates",
]
