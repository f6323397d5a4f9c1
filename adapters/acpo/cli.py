"""``iqabench train acpo``, ``train ipce`` and ``train two-stream``: plain functions typed for Typer, mounted
through the ``iqabench.cli`` entry points (:func:`mount`); the work is in :mod:`.training`, :mod:`.ipce` and
:mod:`.evaluators`.

Defaults are the ACPO paper's (see :mod:`.config` for the source of each); ``docs/paper_settings.md`` lists them.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from iqabench.contracts.errors import UserInputError

from .config import (
    ALL_LINEAR,
    DEFAULT_LAYERS,
    IPCE_CLIP,
    IPCE_MOS_RANGE,
    IPCE_PAPER_SCHEDULE,
    IPCE_PRETRAINED,
    PAPER_BASE,
    PAPER_LEARNING_RATE,
    PAPER_MAX_STEPS,
    PAPER_MSE_WINDOW,
    PAPER_ROLLOUT_GRID,
    PAPER_ROLLOUT_STEPS,
    PAPER_T_MAX,
    PAPER_X0_MODE,
    resolve_lambda_q,
)


def train_acpo_cmd(
    data: Path = typer.Option(..., "--data", help="image folder or CSV/JSONL of (image, caption) rows"),
    out: Path = typer.Option(..., "--out", help="output folder (LoRA, checkpoints, losses.csv, loss_curve.png)"),
    base: str = typer.Option(PAPER_BASE, "--base", help="base generator spec (paper: sd14 = SD v1.4)"),
    evaluator: str = typer.Option(..., "--evaluator",
                                  help="Q: a differentiable NR metric (topiq_nr or metric:topiq_nr), "
                                       "ipce:<ipce.safetensors from train ipce> or "
                                       "two-stream:<two_stream.safetensors from train two-stream>"),
    max_steps: int = typer.Option(PAPER_MAX_STEPS, "--max-steps"),
    lr: float = typer.Option(PAPER_LEARNING_RATE, "--learning-rate"),
    t_max: int = typer.Option(PAPER_T_MAX, "--t-max", help="late window of the anchor and quality terms: t <= T_max"),
    lambda_q: str = typer.Option("appendix", "--lambda-q",
                                 help="a number, or the paper's readings: appendix (0.1, the SD runs; default) or "
                                      "main-text (1.0, 'optimal' for DDPM)"),
    lambda_anchor: float = typer.Option(1.0, "--lambda-anchor", help="paper silent; see docs/paper_settings.md"),
    x0_mode: str = typer.Option(PAPER_X0_MODE, "--x0-mode", help="rollout (paper, Table 8) or one-step"),
    rollout_steps: int = typer.Option(PAPER_ROLLOUT_STEPS, "--rollout-steps", help="K for --x0-mode rollout"),
    rollout_grid: str = typer.Option(PAPER_ROLLOUT_GRID, "--rollout-grid",
                                     help="reading of 'the last K steps': even (K steps evenly from t to 0; "
                                          "default) or sampler-50 (the 50-step DDIM grid's last K)"),
    mse_window: str = typer.Option(PAPER_MSE_WINDOW, "--mse-window",
                                   help="all (denoising MSE over every timestep, the paper) or late (t <= T_max)"),
    lora_targets: str = typer.Option(ALL_LINEAR, "--lora-targets",
                                     help="all-linear (every UNet nn.Linear, the paper) or module names, "
                                          "e.g. to_q,to_k,to_v,to_out.0"),
    rank: int = typer.Option(4, "--rank", help="LoRA rank (paper silent; see docs/paper_settings.md)"),
    batch_size: int = typer.Option(1, "--batch-size"),
    resolution: int = typer.Option(512, "--resolution"),
    mixed_precision: str = typer.Option("no", "--mixed-precision", help="no, fp16 or bf16"),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing/--no-gradient-checkpointing"),
    save_every: int = typer.Option(500, "--save-every"),
    seed: int = typer.Option(0, "--seed"),
    score_low: float | None = typer.Option(None, "--score-low", help="metric score mapped to Q=0 (default: "
                                           "the low end of the metric's range when it is known)"),
    score_high: float | None = typer.Option(None, "--score-high", help="metric score mapped to Q=1"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the resolved settings as JSON and stop"),
) -> None:
    """Fine-tune a LoRA with ACPO's late-window quality loss; resumes from the last checkpoint in --out."""
    from iqabench.cli.fetch import check_before_training
    from iqabench.contracts.generators import build_generator
    from iqabench.execution.runtime import Runtime

    from ..quality_base import require_unet_base
    from .data import ImageCaptionDataset
    from .evaluator_spec import build_evaluator, check_evaluator
    from .generator import AcpoGenerator
    from .needs import acpo_needs
    from .training import AcpoConfig, train_acpo

    runtime = Runtime(device="auto", dtype="fp32")
    config = AcpoConfig(output_dir=str(out), max_steps=max_steps, learning_rate=lr, t_max=t_max,
                        lambda_q=resolve_lambda_q(lambda_q), lambda_anchor=lambda_anchor, x0_mode=x0_mode,
                        rollout_steps=rollout_steps, rollout_grid=rollout_grid, mse_window=mse_window,
                        lora_targets=lora_targets, rank=rank, batch_size=batch_size, mixed_precision=mixed_precision,
                        gradient_checkpointing=gradient_checkpointing, save_every=save_every, seed=seed,
                        base=base)
    kind, argument = check_evaluator(evaluator)  # unknown metric / missing file: one sentence, dry run too
    require_unet_base(base, AcpoGenerator.needs_unet_cross_attention, "train acpo")  # SD3/FLUX: before any load
    if dry_run:
        from dataclasses import asdict

        typer.echo(json.dumps({**asdict(config), "evaluator_kind": kind, "evaluator": argument,
                               "resolution": resolution}, sort_keys=True))
        return
    check_before_training(acpo_needs(base, evaluator, runtime))  # every missing file at once, before any load
    quality = build_evaluator(evaluator, runtime, score_low, score_high)
    pipe = build_generator(base, runtime).load_pipeline()
    rows = ImageCaptionDataset(data, resolution=resolution)
    result = train_acpo(pipe, quality, rows, config)
    typer.echo(f"trained to step {result.step}; LoRA in {result.output}; use it as acpo:{out}")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserInputError(f"{text!r} is not a comma-separated list of integers") from None


def _range(text: str | None) -> tuple[float, float] | None:
    if text is None or text.strip().lower() == "auto":
        return None
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise UserInputError(f"--mos-range {text!r}: write low,high (e.g. 1,5) or auto") from None
    if not high > low:  # an empty or reversed range would divide by zero or flip every target
        raise UserInputError(f"--mos-range {text!r}: low must be below high (e.g. 1,5)")
    return low, high


def ipce_stages(schedule: str, tables: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """(table, output folder) per stage: one stage, or the paper's three (the last one writes ``out``)."""
    if schedule == "single":
        if len(tables) != 1:
            raise typer.BadParameter(f"--schedule single fits one --table, got {len(tables)}; use --schedule paper "
                                     "for the staged pre-training")
        return [(tables[0], out)]
    if schedule != "paper":
        raise typer.BadParameter(f"--schedule {schedule!r} is unknown: choose single or paper")
    if len(tables) != len(IPCE_PAPER_SCHEDULE):
        raise typer.BadParameter(f"--schedule paper has {len(IPCE_PAPER_SCHEDULE)} stages "
                                 f"({', then '.join(IPCE_PAPER_SCHEDULE)}): give one --table each, in order")
    return [(t, out if i == len(tables) - 1 else out / f"stage{i + 1}") for i, t in enumerate(tables)]


def train_ipce_cmd(
    table: list[Path] = typer.Option(..., "--table", help="CSV/Parquet of rated images: path, prompt, score "
                                                          "(repeat it with --schedule paper: one per stage)"),
    schedule: str = typer.Option("single", "--schedule",
                                 help="single (one table) or paper: the ACPO paper's three-stage pre-training, "
                                      "AGIQA-1K/3K then AIGCIQA2023 then AIGCQA-30K, one --table each, in order"),
    out: Path = typer.Option(..., "--out", help="output folder (ipce.safetensors, ipce_fit.json)"),
    clip: str = typer.Option(IPCE_CLIP, "--clip", help="open_clip model name (official IPCE: ViT-B/32)"),
    weights: str = typer.Option(IPCE_PRETRAINED, "--weights",
                                help="open_clip pretrained tag (openai) or a local .safetensors file"),
    layers: str = typer.Option(",".join(map(str, DEFAULT_LAYERS)), "--layers",
                               help="visual blocks (0-based) whose patch/CLS agreement S_l feeds the head"),
    mos_range: str = typer.Option(",".join(f"{v:g}" for v in IPCE_MOS_RANGE), "--mos-range",
                                  help="the MOS scale low,high (IPCE: 1,5) or auto (the table's min,max)"),
    epochs: int = typer.Option(500, "--epochs", help="full-batch Adam steps on the cached features"),
    lr: float = typer.Option(1e-2, "--learning-rate"),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="held out for SRCC/PLCC"),
    batch_size: int = typer.Option(32, "--batch-size", help="images per CLIP forward when extracting features"),
    path_column: str = typer.Option("path", "--path-column"),
    prompt_column: str = typer.Option("prompt", "--prompt-column"),
    score_column: str = typer.Option("score", "--score-column"),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """ACPO stage 1: fit the IPCE-style evaluator's regression head on an image/MOS table (CLIP frozen)."""
    from iqabench.cli.fetch import check_before_training
    from iqabench.execution.runtime import Runtime

    from .ipce import train_ipce
    from .mos_table import read_mos_table
    from .needs import ipce_training_needs

    stages = ipce_stages(schedule, table, out)
    scale = _range(mos_range)
    # Every stage's table is read and checked before the first fit: the paper's three sets need not share one MOS
    # scale, and a score outside the head's range is one a sigmoid onto that range can never reach.
    tables = [read_mos_table(stage_table, path_column, prompt_column, score_column) for stage_table, _ in stages]
    if scale is not None:
        for (stage_table, _), rows in zip(stages, tables, strict=True):
            low, high = float(rows.scores.min()), float(rows.scores.max())
            if low < scale[0] or high > scale[1]:
                raise UserInputError(f"{stage_table}'s scores run from {low:g} to {high:g}, outside the MOS range "
                                     f"{scale[0]:g},{scale[1]:g}: rescale that table to it, or pass --mos-range "
                                     "low,high covering every table (or auto to fit each table's own)")
    check_before_training(ipce_training_needs(clip, weights))
    path = None
    for number, ((stage_table, stage_out), rows) in enumerate(zip(stages, tables, strict=True), 1):
        if len(stages) > 1:
            typer.echo(f"stage {number}/{len(stages)} ({IPCE_PAPER_SCHEDULE[number - 1]}): {stage_table}")
        path, fit = train_ipce(rows, stage_out, clip=clip, weights=weights, layers=_int_list(layers),
                               mos_range=scale, epochs=epochs, lr=lr, val_fraction=val_fraction,
                               batch_size=batch_size, seed=seed, device=Runtime(device=device).torch_device,
                               init_from=path)
    held_out = f"held-out SRCC {fit.srcc:.3f}, PLCC {fit.plcc:.3f}" if fit.srcc is not None else "no held-out split"
    typer.echo(f"fitted on {fit.n_train} images ({held_out}); use it as --evaluator ipce:{path}")


def train_two_stream_cmd(
    table: Path = typer.Option(..., "--table", help="CSV/Parquet of rated images: path, prompt, score"),
    out: Path = typer.Option(..., "--out", help="output folder (two_stream.safetensors)"),
    epochs: int = typer.Option(10, "--epochs"),
    lr: float = typer.Option(1e-3, "--learning-rate"),
    batch_size: int = typer.Option(16, "--batch-size"),
    size: int = typer.Option(224, "--size", help="side the images are resized to"),
    width: int = typer.Option(16, "--width", help="channels of the first conv of each stream"),
    mos_range: str = typer.Option("auto", "--mos-range", help="low,high or auto (the table's min,max)"),
    path_column: str = typer.Option("path", "--path-column"),
    score_column: str = typer.Option("score", "--score-column"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """ACPO stage 1: train the two-stream NR-IQA network (image + gradient map) on an image/MOS table."""
    from .evaluator_spec import save_two_stream
    from .evaluators import TwoStreamIQA, train_two_stream
    from .mos_table import read_mos_table

    scale = _range(mos_range)  # a bad range is refused before any image is read
    rows = read_mos_table(table, path_column, None, score_column)
    torch_seed(seed)
    model = TwoStreamIQA(width=width, size=size)
    losses = train_two_stream(model, rows.images(range(len(rows)), size), rows.scores, epochs=epochs, lr=lr,
                              batch_size=batch_size, seed=seed, mos_range=scale)
    path = save_two_stream(model, out / "two_stream.safetensors", {"epochs": epochs, "final_loss": losses[-1]})
    typer.echo(f"trained {epochs} epochs (loss {losses[0]:.4f} -> {losses[-1]:.4f}); "
               f"use it as --evaluator two-stream:{path}")


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def mount(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Entry point of the ``iqabench.cli`` group (see pyproject.toml)."""
    from iqabench.cli.fetch import register_train_needs

    groups["train"].command("acpo")(train_acpo_cmd)
    groups["train"].command("ipce")(train_ipce_cmd)
    groups["train"].command("two-stream")(train_two_stream_cmd)
    # `iqabench fetch train <command> ...`: the same needs each command checks before it trains
    register_train_needs("acpo", _acpo_needs, uses=("base", "evaluator"))
    register_train_needs("ipce", _ipce_needs, uses=("clip", "weights"))
    register_train_needs("two-stream", lambda params: [])  # trained from scratch: it loads no weights


def _acpo_needs(params: dict) -> list:
    from .needs import acpo_needs

    return acpo_needs(params["base"], params["evaluator"])


def _ipce_needs(params: dict) -> list:
    from .needs import ipce_training_needs

    return ipce_training_needs(params["clip"], params["weights"])
