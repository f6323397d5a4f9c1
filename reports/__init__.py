"""HTML reports: persist a benchmark Result, render saved runs into one self-contained HTML file.

The names load on first access (PEP 562, :mod:`iqabench.support.lazy`): reading a saved result back (a resume whose
result stands, issue 29) must not import matplotlib, seaborn and scipy.stats through the plotting helpers.
"""

from iqabench.support.lazy import lazy_exports

_LAZY = {
    "SavedResult": ".persist",
    "format_number": ".tables",
    "heatmap_figure": "iqabench.analysis.plotting",
    "load_result": ".persist",
    "render_html": ".render",
    "render_report": ".render",
    "save_result": ".persist",
    "table_view": ".tables",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
