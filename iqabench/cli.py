"""The ``iqabench`` command line: parses, prints, and calls the Python API (runner, reports, registries)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .registry import BENCHMARKS, GENERATORS, METRICS, RegistryError, UnknownNameError, load_plugin

app = typer.Typer(
    name="iqabench",
    help="Quality-aware text-to-image generation and IQA robustness benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()

DEFAULT_OUT = os.environ.get("IQABENCH_OUT", "iqabench_out")
OutOption = Annotated[Path, typer.Option("--out", help="Store folder: image cache, scores, runs.")]
PluginOption = Annotated[
    list[str] | None, typer.Option("--plugin", help="A .py file or module that registers things (repeatable).")
]


def _user_errors() -> tuple[type[BaseException], ...]:
    from .generators import WeightsMissingError
    from .metrics import MetricUnavailableError
    from .prompts import PromptFileError
    from .specs import SpecError

    return (UnknownNameError, RegistryError, WeightsMissingError, MetricUnavailableError, PromptFileError,
            SpecError, ValueError, FileNotFoundError, ImportError)


def _fail(exc: BaseException) -> None:
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


class _RichProgress:
    """Adapts rich's Progress to the runner's ``progress(description, total)`` factory."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def __call__(self, description: str, total: int):
        task_id = self.progress.add_task(description, total=total)
        progress = self.progress

        class _Task:
            def advance(self, n: int = 1) -> None:
                progress.advance(task_id, n)

            def close(self) -> None:
                progress.update(task_id, visible=True)

        return _Task()


def _load_plugins(plugins: list[str] | None) -> None:
    for plugin in plugins or []:
        load_plugin(plugin)


@app.command("run")
def run_command(
    benchmark: Annotated[str, typer.Argument(help="Benchmark name, e.g. relgain (see `iqabench list benchmarks`).")],
    generator: Annotated[list[str], typer.Option("--generator", "-g", help="Generator spec (repeatable).")],
    metrics: Annotated[str, typer.Option(help="Comma-separated metric names.")] = "piqe,entropy",
    baseline: Annotated[str | None, typer.Option(help="Override the generators' own baseline.")] = None,
    prompts: Annotated[str, typer.Option(help="Built-in set (smoke, parti, geneval) or a .txt/.csv/.tsv/.jsonl file.")]
    = "smoke",
    prompt_column: Annotated[str | None, typer.Option(help="Column holding prompts in CSV/TSV/JSONL.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    seeds: Annotated[str, typer.Option(help="Seeds, e.g. '0-3' or '0,7,42'.")] = "0",
    device: Annotated[str, typer.Option(help="cuda, mps, cpu or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="fp32, fp16, bf16 or auto.")] = "auto",
    batch_size: Annotated[str, typer.Option(help="Images per batch, or 'auto' (16 on GPUs, 4 on CPU; halves "
                                                 "on out-of-memory either way).")] = "4",
    num_processes: Annotated[int, typer.Option(help="Shortcut: relaunch through accelerate (GPUs) or torchrun "
                                                    "(CPU) with N processes sharing the work.")] = 1,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the denoiser.")] = False,
    attention_slicing: Annotated[bool, typer.Option("--attention-slicing", help="Sliced attention: less memory.")]
    = False,
    out: OutOption = Path(DEFAULT_OUT),
    run_id: Annotated[str | None, typer.Option(help="Run folder name (default: derived from the spec).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Benchmark option key=value (repeatable).")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (images to make, cached) and stop.")]
    = False,
    plugin: PluginOption = None,
) -> None:
    """Generate, score and analyse a benchmark; writes runs/<id>/report.html."""
    from .metrics import parse_metric_list
    from .runner import Runner
    from .specs import RunSpec, _parse_value, parse_seeds

    if num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise typer.Exit(_relaunch(num_processes))
    try:
        _load_plugins(plugin)
        options = {"compile": True} if compile else {}
        if attention_slicing:
            options["attention_slicing"] = True
        for pair in option or []:
            if "=" not in pair:
                raise ValueError(f"--option {pair!r} is not of the form key=value")
            key, value = pair.split("=", 1)
            options[key.strip()] = _parse_value(value)
        if prompt_column:
            options["prompt_column"] = prompt_column
        spec = RunSpec(benchmark=benchmark, generators=list(generator), metrics=parse_metric_list(metrics),
                       prompts=prompts, seeds=parse_seeds(seeds), limit=limit, baseline=baseline, options=options,
                       device=device, dtype=dtype, batch_size=_batch_size(batch_size, device),
                       plugins=list(plugin or []))
        runner = Runner(spec, out, run_id=run_id, log=lambda m: console.print(f"[yellow]warning:[/] {escape(m)}"))
        plan = runner.summarize_plan()
        for line in plan.lines() if runner.is_main_process else []:
            console.print(line, highlight=False, markup=False)
        if dry_run:
            return
        columns = (TextColumn("{task.description:<11}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not console.is_terminal and "CI" in os.environ) as bar:
            runner.progress = _RichProgress(bar)
            outcome = runner.execute()
    except _user_errors() as exc:
        _fail(exc)
        return
    if not runner.is_main_process:
        return
    if outcome.failures:
        console.print(f"[yellow]{len(outcome.failures)} image(s) failed; see the report's failures table.[/]")
    _print_summary(outcome.result)
    out_console.print(f"report: {outcome.report}", highlight=False)


def _batch_size(text: str, device: str) -> int:
    if text == "auto":
        import torch

        return 16 if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else 4
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--batch-size must be a number or 'auto', not {text!r}") from None


def _relaunch(num_processes: int) -> int:
    """Run this same command under N processes: accelerate on GPUs, torchrun (gloo) on CPU."""
    import subprocess

    import torch

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            argv.append(arg)
    if torch.cuda.is_available():
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                    "--num_processes", str(num_processes)]
    else:
        # --standalone: a free local port per run, so two runs on one machine do not fight over 29500.
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(num_processes)]
    return subprocess.call([*launcher, "-m", "iqabench", *argv])


def _print_summary(result) -> None:
    """The benchmark's first table, trimmed to fit a terminal; the report has everything."""
    if result is None or not result.tables:
        return
    name, table = next(iter(result.tables.items()))
    if table.empty:
        return
    from pandas.api.types import is_numeric_dtype

    labels = [c for c in table.columns if not is_numeric_dtype(table[c]) and c not in ("direction", "baseline")][:3]
    numbers = [c for c in table.columns if is_numeric_dtype(table[c]) and not c.endswith(("_ci_low", "_ci_high"))
               and not c.startswith("n_")][:4]
    shown = Table(title=f"{name} (full tables in the report)")
    for column in labels:
        shown.add_column(escape(str(column)), overflow="fold")
    for column in numbers:
        shown.add_column(escape(str(column)), justify="right")
    for _, row in table.head(30).iterrows():
        cells = [escape(str(row[c])) for c in labels]
        for column in numbers:
            value, low, high = row[column], row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            if low is not None and high is not None:
                text += f" [{low:.3g}, {high:.3g}]"
            cells.append(escape(text))
        shown.add_row(*cells)
    out_console.print(shown)


@app.command("report")
def report_command(
    runs: Annotated[list[str], typer.Argument(help="Run ids (folders under <out>/runs).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file to write.")] = None,
    out: OutOption = Path(DEFAULT_OUT),
) -> None:
    """Combine one or more finished runs into one self-contained HTML report."""
    from .reports import render_report
    from .store import Store

    try:
        store = Store(out)
        for run_id in runs:
            store.read_run_json(run_id)
        path = render_report(store, list(runs), output)
    except _user_errors() as exc:
        _fail(exc)
        return
    out_console.print(f"report: {path}", highlight=False)


@app.command("list")
def list_command(
    what: Annotated[str, typer.Argument(help="generators, metrics, benchmarks or prompts")],
    plugin: PluginOption = None,
) -> None:
    """Show what is available, with a one-line description and whether weights are present locally."""
    from .prompts import BUILTIN_SETS

    try:
        _load_plugins(plugin)
    except _user_errors() as exc:
        _fail(exc)
    registries = {"generators": GENERATORS, "metrics": METRICS, "benchmarks": BENCHMARKS}
    if what == "prompts":
        table = Table("name", "description")
        for name, (description, _) in BUILTIN_SETS.items():
            table.add_row(name, description)
        out_console.print(table)
        return
    if what not in registries:
        from .registry import unknown_name_message

        _fail(ValueError(unknown_name_message("list", what, [*registries, "prompts"]).split(" Run")[0]))
    registry = registries[what]
    table = Table("name", "description", *(["weights"] if what != "benchmarks" else []))
    for entry in registry:
        row = [entry.name, entry.description]
        if what != "benchmarks":
            row.append(entry.weights_status())
        table.add_row(*row)
    out_console.print(table)


@app.command("geneval-summary")
def geneval_summary_command(
    results: Annotated[Path, typer.Argument(help="A results.jsonl from GenEval's evaluate_images.py or ours.")],
) -> None:
    """Summarise a GenEval results file as the official summary_scores.py does (task, overall, prompts)."""
    from .benchmarks.geneval.layout import read_results_jsonl
    from .benchmarks.geneval.rules import summarize

    try:
        if not results.is_file():
            raise FileNotFoundError(f"no GenEval results file at {results}")
        summary = summarize(read_results_jsonl(results))
    except (*_user_errors(), KeyError, TypeError) as exc:
        _fail(exc)
        return
    table = Table("task", "correct", "images", "accuracy", title=f"GenEval: {escape(str(results))}")
    for tag, accuracy in summary.tasks.items():
        correct, total = summary.task_counts[tag]
        table.add_row(escape(tag), str(correct), str(total), f"{accuracy:.2%}")
    out_console.print(table)
    out_console.print(f"overall score (mean of task accuracies): {summary.overall:.5f}", highlight=False)
    out_console.print(f"correct images: {summary.correct_images:.2%} of {summary.n_images}; correct prompts: "
                      f"{summary.correct_prompts:.2%} of {summary.n_prompts}", highlight=False)


train_app = typer.Typer(help="Train generators: iqa-adapter, acpo.", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _mount_generator_commands() -> None:
    """Commands contributed by generator packages: `score-dataset`, `train iqa-adapter`, `train acpo`."""
    from .adapters.acpo.cli import train_acpo_cmd
    from .adapters.iqa_adapter.cli import score_dataset_cmd, train_cmd

    app.command("score-dataset")(score_dataset_cmd)
    train_app.command("iqa-adapter")(train_cmd)
    train_app.command("acpo")(train_acpo_cmd)


_mount_generator_commands()

study_app = typer.Typer(help="Subjective study kit: export pair-voting pages, analyse the votes.",
                        no_args_is_help=True)
app.add_typer(study_app, name="study")


def _mount_study_commands() -> None:
    from .benchmarks.study.cli import study_analyze_cmd, study_export_cmd

    study_app.command("export")(study_export_cmd)
    study_app.command("analyze")(study_analyze_cmd)


_mount_study_commands()


def main() -> None:
    try:
        app()  # usage errors are handled (and exit) inside; other exceptions come out here
    except _user_errors() as exc:  # any command, mounted ones included: one sentence, no traceback
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; re-run the same command to resume from the cache")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
