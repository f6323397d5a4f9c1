"""``iqabench train acpo``, a plain function typed for Typer (mounted through the ``iqabench.cli`` entry points).

The work is in :mod:`.training`.
"""

from __future__ import annotations

from pathlib import Path

import typer


def train_acpo_cmd(
    data: Path = typer.Option(..., "--data", help="image folder or CSV/JSONL of (image, caption) rows"),
    out: Path = typer.Option(..., "--out", help="output folder (LoRA, checkpoints, losses.csv, loss_curve.png)"),
    base: str = typer.Option("sd15", "--base", help="base generator spec: sd15, sdxl, tiny-sd, ..."),
    evaluator: str = typer.Option(..., "--evaluator",
                                  help="a differentiable NR metric name (evaluator a), e.g. topiq_nr"),
    max_steps: int = typer.Option(1000, "--max-steps"),
    lr: float = typer.Option(2e-5, "--learning-rate"),
    t_max: int = typer.Option(100, "--t-max", help="late window: timesteps t <= T_max only"),
    lambda_q: float = typer.Option(0.1, "--lambda-q"),
    lambda_anchor: float = typer.Option(1.0, "--lambda-anchor"),
    x0_mode: str = typer.Option("one-step", "--x0-mode", help="one-step or rollout"),
    rollout_steps: int = typer.Option(10, "--rollout-steps", help="K for --x0-mode rollout"),
    rank: int = typer.Option(4, "--rank"),
    batch_size: int = typer.Option(1, "--batch-size"),
    resolution: int = typer.Option(512, "--resolution"),
    mixed_precision: str = typer.Option("no", "--mixed-precision", help="no, fp16 or bf16"),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing/--no-gradient-checkpointing"),
    save_every: int = typer.Option(500, "--save-every"),
    seed: int = typer.Option(0, "--seed"),
    score_low: float | None = typer.Option(None, "--score-low", help="metric score mapped to Q=0 (default: "
                                           "the low end of the metric's range when it is known)"),
    score_high: float | None = typer.Option(None, "--score-high", help="metric score mapped to Q=1"),
) -> None:
    """Fine-tune a LoRA with ACPO's late-window quality loss; resumes from the last checkpoint in --out."""
    from iqabench.generators import build_generator
    from iqabench.metrics import build_metric
    from iqabench.runtime import Runtime

    from .data import ImageCaptionDataset
    from .evaluators import MetricEvaluator
    from .training import AcpoConfig, train_acpo

    runtime = Runtime(device="auto", dtype="fp32")
    try:
        config = AcpoConfig(output_dir=str(out), max_steps=max_steps, learning_rate=lr, t_max=t_max,
                            lambda_q=lambda_q, lambda_anchor=lambda_anchor, x0_mode=x0_mode,
                            rollout_steps=rollout_steps, rank=rank, batch_size=batch_size,
                            mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
                            save_every=save_every, seed=seed, base=base)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    pipe = build_generator(base, runtime).load_pipeline()
    rows = ImageCaptionDataset(data, resolution=resolution)
    low, high = score_range(evaluator) if score_low is None and score_high is None else (score_low, score_high)
    try:
        quality = MetricEvaluator(build_metric(evaluator, runtime, as_loss=True), low, high)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result = train_acpo(pipe, quality, rows, config)
    typer.echo(f"trained to step {result.step}; LoRA in {result.output}; use it as acpo:{out}")


def score_range(metric: str) -> tuple[float | None, float | None]:
    """(low, high) from the metric's declared range ("0, 100", "~0, ~1"), so Q = (s - low) / (high - low).

    A metric with no usable range falls back to the evaluator's sigmoid squash.
    """
    from iqabench.metrics import metric_info

    text = metric_info(metric).score_range or ""
    parts = [p.strip().lstrip("~") for p in text.split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        return None, None
    return (low, high) if high > low else (None, None)


def mount(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Entry point of the ``iqabench.cli`` group (see pyproject.toml)."""
    groups["train"].command("acpo")(train_acpo_cmd)
