"""``iqabench run``: parse the options into a RunSpec, print the plan, run it with progress bars, summarise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..contracts.errors import UserInputError
from .common import DEFAULT_OUT, OutOption, PluginOption, console, load_plugins, out_console
from .progress import RichProgress
from .relaunch import relaunch
from .selection import check_metric_names as _check_metric_names
from .selection import parse_options, run_fields
from .summary import print_summary


def run_command(
    benchmark: Annotated[str, typer.Argument(help="Benchmark name, e.g. relgain (see `iqabench list benchmarks`).")],
    generator: Annotated[list[str] | None, typer.Option("--generator", "-g", help="Generator spec (repeatable).")]
    = None,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated metric names [default: piqe,entropy].")]
    = None,
    baseline: Annotated[str | None, typer.Option(help="Override the generators' own baseline.")] = None,
    prompts: Annotated[str | None, typer.Option(help="Built-in set (smoke, parti, geneval) or a .txt/.csv/.tsv/.jsonl "
                                                     "file [default: smoke].")] = None,
    prompt_column: Annotated[str | None, typer.Option(help="Column holding prompts in CSV/TSV/JSONL.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. '0-3' or '0,7,42' [default: 0].")] = None,
    preset: Annotated[str | None, typer.Option(help="A paper's setting, e.g. paper:iqa-fig3a: fills generators, "
                                                    "metrics, seeds, limit and options with the paper's values "
                                                    "(see docs/paper_settings.md).")] = None,
    device: Annotated[str, typer.Option(help="cuda, mps, cpu or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="fp32, fp16, bf16 or auto.")] = "auto",
    batch_size: Annotated[str, typer.Option(help="Images per batch, or 'auto' (measured: the fastest size that "
                                                 "fits, remembered per generator and device; halves on "
                                                 "out-of-memory either way).")] = "4",
    num_processes: Annotated[int, typer.Option(help="Shortcut: relaunch through accelerate (GPUs) or torchrun "
                                                    "(CPU) with N processes sharing the work.")] = 1,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the denoiser and the VAE decoder.")]
    = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="NHWC memory format for UNet and VAE.")]
    = False,
    fuse_qkv: Annotated[bool, typer.Option("--fuse-qkv", help="Fused q/k/v projections (diffusers).")] = False,
    sdpa_backend: Annotated[str, typer.Option(help="Attention kernel: auto, flash, efficient, cudnn or math.")]
    = "auto",
    attention_slicing: Annotated[bool, typer.Option("--attention-slicing", help="Sliced attention: less memory.")]
    = False,
    out: OutOption = Path(DEFAULT_OUT),
    run_id: Annotated[str | None, typer.Option(help="Run folder name (default: derived from the spec).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Benchmark option key=value (repeatable).")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (images to make, cached) and stop.")]
    = False,
    plugin: PluginOption = None,
    allow_failures: Annotated[bool, typer.Option("--allow-failures", help="Exit 0 even when images or scores "
                                                 "are missing (the report shows a partial run).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Let this spec replace a run of another spec "
                                            "under the same --run-id (refused without it).")] = False,
    trust_hub_code: Annotated[bool, typer.Option("--trust-hub-code", help="Allow metrics that import code from "
                                                 "torch hub's cache (e.g. fid_dinov2); like trust_remote_code.")]
    = False,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network (as HF_HUB_OFFLINE=1): a "
                                                            "missing file is reported, not downloaded.")] = False,
) -> None:
    """Generate, score and analyse a benchmark; writes runs/<id>/report.html.

    Exits 0 only when every planned image and score exists, 3 when some are
    missing (re-run to retry them), 2 for a bad input or environment.
    """
    if metrics and not plugin:
        _check_metric_names(metrics)  # a typo answered in a second, before torch and the models are imported
    from ..api import execute
    from ..contracts.errors import EXIT_INCOMPLETE, EXIT_USER_ERROR
    from ..contracts.execution import Execution
    from ..contracts.specs import RunSpec
    from ..engine.preflight import MissingPiecesError
    from ..engine.runner import Runner
    from ..execution.batching import parse_batch_size
    from .fetch import current_fetch_hint, print_missing, value_less_options

    if offline:  # before any library reads it (huggingface_hub freezes HF_HUB_OFFLINE at import)
        os.environ.update(HF_HUB_OFFLINE="1", IQABENCH_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if num_processes < 1:
        raise UserInputError(f"--num-processes must be at least 1, not {num_processes}")
    if num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise typer.Exit(relaunch(num_processes))
    load_plugins(plugin)
    fields = run_fields(benchmark, generator, metrics, prompts, seeds, limit, parse_options(option, prompt_column),
                        preset)
    if preset is not None and dry_run:  # before any generator is built: visible without the weights
        resolved = ", ".join(f"{key}={fields[key]!r}" for key in
                             ("generators", "metrics", "prompts", "seeds", "limit", "options"))
        console.print(f"{escape(preset)} resolves to: {escape(resolved)}", highlight=False, soft_wrap=True)
    spec = RunSpec(benchmark=benchmark, **fields, baseline=baseline, dtype=dtype, plugins=list(plugin or []))
    # How it runs: not part of the spec, so none of these flags changes the run id or a cache key.
    how = Execution(device=device, batch_size=parse_batch_size(batch_size), compile=compile,
                    channels_last=channels_last, fuse_qkv=fuse_qkv, sdpa_backend=sdpa_backend,
                    attention_slicing=attention_slicing, num_processes=num_processes)
    try:
        runner = Runner(spec, out, run_id=run_id, execution=how,
                        log=lambda m: console.print(f"[yellow]warning:[/] {escape(m)}"), overwrite=overwrite,
                        trust_hub_code=trust_hub_code, fetch_hint=current_fetch_hint(value_less_options(run_command)),
                        download=not dry_run)  # a dry run reports what is missing, it never downloads
    except MissingPiecesError as exc:  # a table of every missing piece, not one sentence
        print_missing(exc)
        raise typer.Exit(EXIT_USER_ERROR) from None
    plan = runner.summarize_plan()
    for line in plan.lines() if runner.is_main_process else []:
        console.print(line, highlight=False, markup=False)
    if dry_run:
        return
    columns = (TextColumn("{task.description:<11}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    # 2 redraws a second, not rich's 10: its refresh thread otherwise takes 1.3% of a core from the pipeline
    # in a terminal (0.28% at 2/s), and a batch takes seconds anyway. Not a terminal (nohup, Slurm, a pipe): no
    # refresh thread at all; it would build the bar twice a second for nobody, waking beside the pipeline's
    # threads. The log gets the bar's final state when it stops.
    with Progress(*columns, console=console, disable=not console.is_terminal and "CI" in os.environ,
                  refresh_per_second=2, auto_refresh=console.is_terminal) as bar:
        runner.progress = RichProgress(bar)
        outcome = execute(runner)
    if not runner.is_main_process:
        return
    print_summary(outcome.result)
    out_console.print(f"report: {outcome.report}", highlight=False, soft_wrap=True)
    if not outcome.complete:
        console.print(f"[yellow]{escape(outcome.incomplete_summary())}[/]", highlight=False)
        if not allow_failures:
            raise typer.Exit(EXIT_INCOMPLETE)

