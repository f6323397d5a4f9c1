"""HTML reports: persist a benchmark Result, render saved runs into one self-contained HTML file."""

from iqabench.plotting import heatmap_figure

from .persist import SavedResult, load_result, save_result
from .render import render_html, render_report
from .tables import format_number, table_view

__all__ = [
    "SavedResult",
    "format_number",
    "heatmap_figure",
    "load_result",
    "render_html",
    "render_report",
    "save_result",
    "table_view",
]
