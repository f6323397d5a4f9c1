"""``iqabench score-dataset`` and ``iqabench train iqa-adapter``, mounted through the ``iqabench.cli`` entry points.

The CLI only parses and prints; the work is in :mod:`.dataset` and :mod:`.training`.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="IQA-Adapter: score datasets and train adapters.", no_args_is_help=True)


@app.command("score-dataset")
def score_dataset_cmd(
    source: str = typer.Argument(..., help="image folder, CSV/JSONL (image, caption) or a saved HF dataset"),
    metrics: str = typer.Option(..., "--metrics", help="comma-separated pyiqa names, e.g. topiq_nr,laion_aes"),
    out: Path = typer.Option(..., "--out", help="output folder for scores.parquet and stats.csv"),
    batch_size: int = typer.Option(16, "--batch-size"),
    resolution: int = typer.Option(512, "--resolution", help="center-crop side scored (0 keeps sizes)"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Score every image with every metric (resumable); write the table and the stats the adapter uses."""
    from iqabench.runtime import Runtime

    from .dataset import score_dataset

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    table, stats = score_dataset(source, names, out, runtime=Runtime(device=device, dtype="fp32"),
                                 batch_size=batch_size, resolution=resolution or None)
    typer.echo(f"wrote {table} and {stats}")


@app.command("train")
def train_cmd(
    scores: Path = typer.Option(..., "--scores", help="scores.parquet from score-dataset (stats.csv beside it)"),
    metrics: str = typer.Option(..., "--metrics", help="comma-separated metric columns, in adapter input order"),
    base: str = typer.Option("sdxl", "--base", help="base generator spec: sdxl, sd15, tiny-sd, tiny-sdxl, ..."),
    out: Path = typer.Option(..., "--out", help="output folder (checkpoint-N/ subfolders)"),
    phase: int = typer.Option(1, "--phase", help="the paper's training phase: 1 (512 px, lr 1e-4, from scratch) "
                                                 "or 2 (1024 px, lr 1e-5, fine-tunes --init-from)"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="default: --epochs of the data when the phase "
                                                                    "states them (phase 2: 3), else 1000"),
    epochs: int | None = typer.Option(None, "--epochs", help="default: the phase's (phase 2: 3)"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="per device; default: the phase's (8 / 16)"),
    grad_accum: int = typer.Option(1, "--gradient-accumulation-steps"),
    lr: float | None = typer.Option(None, "--learning-rate", help="default: the phase's (1e-4 / 1e-5)"),
    resolution: int | None = typer.Option(None, "--resolution", help="default: the phase's (512 / 1024)"),
    n_tokens: int = typer.Option(2, "--num-tokens"),
    projection: str = typer.Option("linear", "--projection", help="linear or mlp"),
    use_flag: bool = typer.Option(False, "--use-flag/--no-flag"),
    pos_frequencies: int = typer.Option(0, "--pos-encoding-L", help="0 = no positional encoding"),
    quality_drop: float = typer.Option(0.01, "--quality-drop"),
    text_drop: float = typer.Option(0.05, "--text-drop"),
    both_drop: float = typer.Option(0.01, "--both-drop"),
    noise_offset: float = typer.Option(0.0, "--noise-offset"),
    mixed_precision: str = typer.Option("auto", "--mixed-precision",
                                        help="auto (bf16 as the paper where the GPU supports it, else fp32), "
                                             "no, fp16 or bf16"),
    save_every: int = typer.Option(1000, "--save-every"),
    init_from: Path | None = typer.Option(None, "--init-from", help="start from this adapter checkpoint "
                                                                     "(phase 2: the phase-1 adapter)"),
    seed: int = typer.Option(0, "--seed"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the resolved settings as JSON and stop"),
) -> None:
    """Train an IQA-Adapter on a scored dataset; resumes from the last checkpoint in --out."""
    import json

    from .phases import phase as training_phase
    from .phases import resolve_mixed_precision

    preset = training_phase(phase)
    if preset.needs_init and init_from is None and not dry_run:
        raise typer.BadParameter("--phase 2 fine-tunes the phase-1 adapter: pass it with --init-from")
    resolution = resolution or preset.resolution
    lr = lr if lr is not None else preset.learning_rate
    batch_size = batch_size or preset.batch_size
    epochs = epochs if epochs is not None else preset.epochs
    precision, why = resolve_mixed_precision(mixed_precision)
    settings = {"phase": phase, "resolution": resolution, "learning_rate": lr, "batch_size": batch_size,
                "epochs": epochs, "max_steps": max_steps, "mixed_precision": precision, "base": base,
                "init_from": str(init_from) if init_from else None, "source": preset.source}
    if dry_run:
        typer.echo(json.dumps(settings, sort_keys=True))
        return
    typer.echo(f"phase {phase}: {resolution} px, lr {lr:g}, batch {batch_size}/device, precision {why}")

    from iqabench.generators import build_generator
    from iqabench.runtime import Runtime

    from .adapter import AdapterConfig
    from .dataset import ScoredImageDataset
    from .training import TrainConfig, build_adapter_for_training, train_adapter

    names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    dataset = ScoredImageDataset.from_table(scores, names, resolution=resolution)
    if max_steps is None:
        max_steps = epochs * max(1, len(dataset) // (batch_size * grad_accum)) if epochs else 1000
    generator = build_generator(base, Runtime(device="cpu", dtype="fp32"))
    pipe = generator.load_pipeline()
    config = AdapterConfig(names, n_tokens=n_tokens, projection=projection, use_flag=use_flag,
                           pos_frequencies=pos_frequencies, base=base,
                           stats={s.name: s for s in dataset.stats})
    adapter = build_adapter_for_training(pipe, config, init_from)
    result = train_adapter(pipe, adapter, dataset, TrainConfig(
        output_dir=str(out), max_steps=max_steps, batch_size=batch_size, gradient_accumulation_steps=grad_accum,
        learning_rate=lr, quality_drop=quality_drop, text_drop=text_drop, both_drop=both_drop,
        noise_offset=noise_offset, mixed_precision=precision, save_every=save_every, seed=seed))
    typer.echo(f"trained to step {result.step}; last checkpoint {result.checkpoint}")


def mount(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Entry point of the ``iqabench.cli`` group (see pyproject.toml)."""
    app.command("score-dataset")(score_dataset_cmd)
    groups["train"].command("iqa-adapter")(train_cmd)
