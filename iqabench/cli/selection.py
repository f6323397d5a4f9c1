"""What ``run`` and ``fetch`` share: the selection arguments (benchmark options, presets) turned into RunSpec fields.

Kept apart from both commands so neither imports the other.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from ..contracts.errors import UserInputError
from .common import console, print_error


def parse_options(option: list[str] | None, prompt_column: str | None) -> dict:
    """``--option key=value`` pairs (values as JSON scalars; a key given twice is refused) plus --prompt-column."""
    from ..contracts.specs import SpecError, parse_value

    options: dict = {}
    for pair in option or []:
        if "=" not in pair or not pair.split("=", 1)[0].strip():
            raise SpecError(f"--option {pair!r} is not of the form key=value")
        key, value = (part.strip() for part in pair.split("=", 1))
        if key in options:
            raise SpecError(f"--option {key!r} is given twice; keep one")
        options[key] = parse_value(value, key=key)
    if prompt_column:
        options["prompt_column"] = prompt_column
    return options


def run_fields(benchmark: str, generator: list[str] | None, metrics: str | None, prompts: str | None,
               seeds: str | None, limit: int | None, options: dict, preset: str | None) -> dict:
    """generators/metrics/prompts/seeds/limit/options of the RunSpec: the command line's, over a ``--preset``'s
    paper values (:mod:`iqabench.support.paper_presets`), over the plain defaults."""
    from ..contracts.specs import parse_seeds
    from ..metrics import parse_metric_list

    given = {"generators": list(generator or []),
             "metrics": parse_metric_list(metrics) if metrics is not None else None,  # "" is refused, not defaulted
             "prompts": prompts, "seeds": parse_seeds(seeds) if seeds is not None else None, "limit": limit,
             "options": options}
    if preset is not None:
        from ..support import paper_presets

        fields, departures = paper_presets.apply(preset, benchmark, given)
        for line in departures:
            console.print(f"[yellow]note:[/] departs from {escape(preset)}: {escape(line)}", highlight=False)
        return fields
    if not given["generators"]:
        raise UserInputError("give at least one --generator (or a --preset paper:<id>)")
    return {"generators": given["generators"], "metrics": given["metrics"] or parse_metric_list("piqe,entropy"),
            "prompts": prompts or "smoke", "seeds": given["seeds"] or [0], "limit": limit, "options": options}


def check_metric_names(metrics: str) -> None:
    """Refuse a name that is neither a pyiqa metric nor registered so far, with pyiqa's close matches, fast
    (``run`` and ``fetch`` both ask, before torch and the models are imported)."""
    from .. import metric_catalog
    from ..contracts.registry import METRICS, unknown_name_message

    known = list(dict.fromkeys([*metric_catalog.known_names(), *METRICS._entries]))
    for name in (n.strip() for n in metrics.split(",")):
        if metric_catalog.is_family_name(name):  # ipce:<file>: checked when it registers
            continue
        if name and known and name not in known and not _entry_point_metrics():
            print_error(unknown_name_message("metric", name, known))
            raise typer.Exit(2)


def _entry_point_metrics() -> bool:
    """Do installed packages register metrics (``iqabench.metrics`` entry points)? Then the registry decides."""
    from importlib.metadata import entry_points

    return bool(entry_points(group="iqabench.metrics"))
