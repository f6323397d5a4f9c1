"""Subjective-study kit: export blind side-by-side pair-voting pages, import the votes and analyse them.

IQA-Adapter paper Sec. 4.3.1 and supplementary Sec. 15 (Fig. 3b-c): participants
see two images of the same prompt and seed and pick the better one (or
"equal"); verification pairs with an obvious answer weed out careless
participants. ``export`` writes a static HTML page that needs no server;
``analyze`` computes win rates, pairwise win-rate matrices, vote shares and
Bradley-Terry scores with bootstrap confidence intervals.
"""

from .analyze import (
    analyze_study,
    bradley_terry,
    load_votes,
    pairwise_matrix,
    verification_report,
    vote_outcomes,
    vote_shares,
    win_rates,
)
from .export import collect_conditions, export_study

__all__ = [
    "analyze_study",
    "bradley_terry",
    "collect_conditions",
    "export_study",
    "load_votes",
    "pairwise_matrix",
    "verification_report",
    "vote_outcomes",
    "vote_shares",
    "win_rates",
]
