"""``iqabench study export`` / ``iqabench study analyze``: plain functions typed for Typer.

:func:`mount` adds them as the ``study`` group (entry point of the ``iqabench.cli`` group).
They only parse and print; :mod:`.export` and :mod:`.analyze` do the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iqabench.contracts.errors import UserInputError


def study_export_cmd(
    runs: Annotated[list[str], typer.Argument(help="Run ids (folders under <out>/runs) whose images to compare.")],
    dest: Annotated[Path, typer.Option("--dest", help="Folder to write index.html, images/ and study.json into.")],
    out: Annotated[Path, typer.Option("--out", help="Store folder the runs live in.")] = Path("iqabench_out"),
    condition: Annotated[list[str] | None, typer.Option(
        "--condition", help="Only these conditions (generator spec plus params, as study.json names them).")] = None,
    n_verification: Annotated[int, typer.Option(help="Verification pairs (image vs a degraded copy).")] = 4,
    max_pairs: Annotated[int | None, typer.Option(help="Sample at most this many study pairs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for pair order, sides and sampling.")] = 0,
    title: Annotated[str, typer.Option(help="Page title shown to participants.")] = "Which image looks better?",
) -> None:
    """Export a blind side-by-side voting page for the images of finished runs."""
    from iqabench.store.store import Store

    from .export import collect_conditions, export_study

    if not out.is_dir():
        raise FileNotFoundError(f"no store at {out}: pass --out with the folder your runs wrote to")
    if n_verification < 0:
        raise UserInputError("--n-verification must be >= 0")
    store = Store(out)
    images = collect_conditions(store, runs)
    page = export_study(store, images, dest, n_verification=n_verification, seed=seed, max_pairs=max_pairs,
                        conditions=condition, title=title, run_ids=runs)
    import json

    manifest = json.loads((page.parent / "study.json").read_text("utf-8"))
    n_checks = sum(p["verification"] for p in manifest["pairs"])
    typer.echo(f"study {manifest['study_id']}: {len(manifest['pairs']) - n_checks} pairs + {n_checks} verification "
               f"pairs over {len(manifest['conditions'])} conditions")
    typer.echo(f"page: {page}")


def study_analyze_cmd(
    study: Annotated[Path, typer.Argument(help="The folder `study export` wrote (with study.json).")],
    votes: Annotated[list[Path], typer.Argument(help="Votes files: the page's JSON downloads and/or CSV "
                                                     "(participant, pair_id, choice).")],
    max_failed_checks: Annotated[int, typer.Option(help="Exclude participants failing more checks than this.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the Bradley-Terry CIs.")] = 500,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML report to write.")] = None,
) -> None:
    """Win rates, pairwise matrix, vote shares and Bradley-Terry scores from the votes; writes an HTML report."""
    from iqabench.reports import render_report, save_result
    from iqabench.store.store import Store

    from .analyze import analyze_study, load_manifest

    manifest = load_manifest(study)
    result = analyze_study(study, votes, max_failed_checks=max_failed_checks, n_boot=n_boot)
    store = Store(Path(study) / "analysis")
    run_id = f"study-{manifest['study_id']}"
    save_result(store, run_id, result)
    report = render_report(store, [run_id], output)
    for note in result.notes:
        typer.echo(note)
    if "bradley_terry" in result.tables:
        rates = result.tables["win_rates"].set_index("condition").win_rate
        for row in result.tables["bradley_terry"].itertuples():
            typer.echo(f"  {row.condition}: win rate {rates[row.condition]:.3f}, BT {row.bt_score:+.3f} "
                       f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]")
    typer.echo(f"report: {report}")


def mount(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Entry point of the ``iqabench.cli`` group (see pyproject.toml): the ``study`` command group."""
    study_app = typer.Typer(help="Subjective study kit: export pair-voting pages, analyse the votes.",
                            no_args_is_help=True)
    study_app.command("export")(study_export_cmd)
    study_app.command("analyze")(study_analyze_cmd)
    app.add_typer(study_app, name="study")
