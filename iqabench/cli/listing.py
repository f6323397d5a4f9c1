"""``iqabench list``: what is registered, with a one-line description and whether weights are present."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..contracts.errors import UserInputError
from ..contracts.registry import BENCHMARKS, GENERATORS, METRICS
from .common import DEFAULT_OUT, OutOption, PluginOption, load_plugins, out_console, print_error


def list_command(
    what: Annotated[str, typer.Argument(help="generators, metrics, benchmarks, prompts or runs")],
    names: Annotated[list[str] | None, typer.Argument(help="With metrics: only these names.")] = None,
    missing: Annotated[bool, typer.Option("--missing", help="With metrics: only those whose weights are missing.")]
    = False,
    nr: Annotated[bool, typer.Option("--nr", help="With metrics: only no-reference metrics.")] = False,
    fr: Annotated[bool, typer.Option("--fr", help="With metrics: only full-reference metrics.")] = False,
    plugin: PluginOption = None,
    options: Annotated[bool, typer.Option("--options", help="With benchmarks: each one's --option keys; with "
                                                            "generators: every spec option of each family, with "
                                                            "its type, default and meaning.")] = False,
    out: OutOption = Path(DEFAULT_OUT),
) -> None:
    """Show what is available (with whether weights are present locally), or the runs in a store (--out)."""
    from ..io.prompts import BUILTIN_SETS

    if what == "runs":
        print_runs(Path(out))
        return
    if what == "metrics" and not plugin and not options:
        print_metrics(names or [], missing=missing, mode="NR" if nr and not fr else "FR" if fr and not nr else None)
        return
    if names or missing or nr or fr:
        raise UserInputError(f"names, --missing, --nr and --fr filter `list metrics` (without --plugin), "
                             f"not `list {what}`")
    load_plugins(plugin)
    registries = {"generators": GENERATORS, "metrics": METRICS, "benchmarks": BENCHMARKS}
    if what == "prompts":
        table = Table("name", "description")
        for name, (description, _) in BUILTIN_SETS.items():
            table.add_row(name, description)
        out_console.print(table)
        return
    if what not in registries:
        from ..contracts.registry import unknown_name_message

        raise UserInputError(unknown_name_message("list", what, [*registries, "prompts", "runs"]).split(" Run")[0])
    registry = registries[what]
    if what == "benchmarks" and options:
        _print_benchmark_options()
        return
    if what == "generators" and options:
        print_generator_options(registry)
        return
    from ..io.hub_code import CODE_LOADING_METRICS, OPT_IN_FLAG

    table = Table("name", "description", *(["weights"] if what != "benchmarks" else []))
    for entry in registry:
        row = [entry.name, entry.description]
        if what == "metrics" and entry.name in CODE_LOADING_METRICS:  # refused without the opt-in
            row[1] = f"(runs cached code: needs {OPT_IN_FLAG}) {row[1]}"
        if what != "benchmarks":
            row.append(entry.weights_status())
        table.add_row(*row)
    out_console.print(table)


def print_metrics(names: list[str], *, missing: bool = False, mode: str | None = None) -> None:
    """The pyiqa metrics from :mod:`iqabench.metric_catalog` (no model code imported): filtered, wrapped at any
    width (a path or URL folds onto the next line, never cut)."""
    from .. import metric_catalog as catalog
    from ..io.hub_code import CODE_LOADING_METRICS, OPT_IN_FLAG

    known = catalog.known_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        from ..contracts.registry import unknown_name_message

        print_error(unknown_name_message("metric", unknown[0], known))  # not fail(): it imports the error classes
        raise typer.Exit(EXIT_USER_ERROR)
    table = Table("name", "kind", "weights")
    table.columns[0].no_wrap = True
    table.columns[2].overflow = "fold"
    shown = 0
    for name in names or known:
        info = catalog.metadata(name)
        present, absent = catalog.weights_status(name)
        if (mode and info["mode"] != mode) or (missing and present is not False):
            continue
        kind = f"{info['mode']}, {'lower' if info['lower_better'] else 'higher'} better"
        if info.get("prompt_aware"):
            kind += ", prompt-aware (scores the image against its prompt)"
        if name in CODE_LOADING_METRICS:  # refused without the opt-in (iqabench.io.hub_code)
            kind += f", runs cached code: needs {OPT_IN_FLAG}"
        table.add_row(name, kind + (f", {info['score_range']}" if info["score_range"] else ""),
                      escape(_weights_cell(name, present, absent)))
        shown += 1
    out_console.print(table)
    out_console.print(f"{shown} metric(s); `iqabench fetch scores --generator tiny-sd --metrics NAME` downloads one "
                      "metric's files", highlight=False)


def _weights_cell(name: str, present: bool | None, absent: list) -> str:
    from .. import metric_catalog as catalog

    if present is False:
        return "; ".join(e["refused"] if "refused" in e else
                         f"missing: {e.get('path') or catalog.resolve(e)[0]} (from {e['source']})" for e in absent)
    if name in catalog.PREFERENCE_FILES:
        return "present"
    entry = catalog.file_table().get(name) or {}
    if present is None:
        return entry.get("error") or "unverified: iqabench does not know every file this arch loads"
    return "present" if entry.get("files") else "no download needed"


def _print_benchmark_options() -> None:
    """Each benchmark's declared ``--option`` keys, then the options every benchmark takes."""
    from ..benchmark import CORE_OPTIONS, build_benchmark, declared_options

    table = Table("benchmark", "option", "meaning")
    for entry in BENCHMARKS:
        declared = declared_options(build_benchmark(entry.name))
        if declared is None:
            table.add_row(entry.name, "(not declared)", "any key is accepted")
        elif not declared:
            table.add_row(entry.name, "(none)", "only the options every benchmark takes")
        for key, meaning in sorted((declared or {}).items()):
            table.add_row(entry.name, key, meaning)
    for key, meaning in CORE_OPTIONS.items():
        table.add_row("(every benchmark)", key, meaning)
    out_console.print(table)


EXIT_USER_ERROR = 2  # iqabench.contracts.errors.EXIT_USER_ERROR, without importing it (it loads the error classes)
WIDE_TERMINAL = 110  # columns from which `list runs` prints one table row per run


def run_rows(out: Path) -> list[dict[str, str]]:
    """One row per ``runs/<id>/run.json`` under the store ``out``, newest first (unreadable ones say so).

    A ``running`` run whose process is gone (or whose heartbeat stopped) is shown as dead.
    """

    rows = []
    for manifest in sorted((out / "runs").glob("*/run.json")):
        run_id = manifest.parent.name
        try:
            rows.append(_run_row(run_id, manifest))
        except (OSError, ValueError) as exc:  # RunFolderError (a ValueError) names the file and says why
            why = " ".join(str(exc).replace(str(manifest), manifest.name).split())[:300]
            rows.append({"id": run_id, "benchmark": "", "generators": "", "status": f"unreadable: {why}", "date": ""})
    return sorted(rows, key=lambda r: r["date"], reverse=True)


def _run_row(run_id: str, manifest: Path) -> dict[str, str]:
    """The ``list runs`` row of one run.json, read bounded and type-checked (:mod:`iqabench.store.run_folders`)."""
    from ..engine.run_status import liveness
    from ..store.run_folders import read_run_manifest, typed_field

    data = read_run_manifest(manifest)
    spec = typed_field(data, "spec", dict, manifest, {})
    generators = typed_field(spec, "generators", list, manifest, [])
    return {"id": run_id, "benchmark": str(data.get("benchmark") or spec.get("benchmark") or ""),
            "generators": ", ".join(str(g) for g in generators),
            "status": liveness(data, manifest.parent),
            "date": str(data.get("updated") or data.get("created") or "")[:16].replace("T", " ")}


def print_runs(out: Path) -> None:
    rows = run_rows(out)
    if not rows:
        out_console.print(f"no runs under {out / 'runs'} (pass the store folder with --out)", highlight=False)
        return
    if out_console.width >= WIDE_TERMINAL:
        table = Table(title=f"runs in {escape(str(out))}", box=box.SIMPLE_HEAD)
        table.add_column("id", no_wrap=True)
        table.add_column("benchmark", no_wrap=True)
        table.add_column("generators", overflow="fold", ratio=1)
        table.add_column("status", no_wrap=True)
        table.add_column("date", no_wrap=True)
        for row in rows:
            table.add_row(*(escape(row[k]) for k in ("id", "benchmark", "generators", "status")), row["date"])
        out_console.print(table)
        return
    # narrow terminals (80 columns): two lines per run instead of a table whose columns would wrap letter by letter
    out_console.print(f"runs in {escape(str(out))}", highlight=False)
    for row in rows:
        out_console.print(f"[bold]{escape(row['id'])}[/]  {escape(row['status'])}  {row['date']}", highlight=False)
        out_console.print(f"  {escape(row['benchmark'])} · generators: {escape(row['generators']) or '–'}",
                          highlight=False, overflow="fold")


def print_generator_options(registry) -> None:
    """One table per generator family, from the option dataclass it registered (``register_generator(options=)``)."""
    for entry in registry:
        options = entry.extra.get("options")
        title = f"{escape(entry.name)}: {escape(entry.description)}"
        table = Table("option", "type", "default", "meaning", "valid values", title=title, title_justify="left")
        preset = entry.extra.get("option_defaults") or {}
        if options is None:
            out_console.print(f"{escape(entry.name)}: options not declared (see its documentation)", highlight=False)
            continue
        for info in options.describe():
            default = preset.get(info.name, info.default)
            table.add_row(info.name, escape(info.type), escape(repr(default)), escape(info.help),
                          escape(getattr(info, "valid", "")))
        out_console.print(table)
        doc = (options.__doc__ or "").strip().splitlines()[0] if options.__doc__ else ""
        if "base model" in doc:
            out_console.print("  plus every option of its base model (see the base family's table)", highlight=False)
