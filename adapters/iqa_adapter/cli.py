"""``iqabench score-dataset`` and ``iqabench train iqa-adapter``, mounted through the ``iqabench.cli`` entry points.

The CLI only parses and prints; the work is in :mod:`.dataset` and :mod:`.training`.
"""

from __future__ import annotations

from pathlib import Path

import typer

#: the official slurm_train_script.sh's 5 nodes x 8 GPUs (= .phases.PAPER_DEVICES; not imported: torch-free CLI)
PAPER_DEVICES = 40

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
    from iqabench.execution.runtime import Runtime

    from .dataset import score_dataset

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    table, stats = score_dataset(source, names, out, runtime=Runtime(device=device, dtype="fp32"),
                                 batch_size=batch_size, resolution=resolution or None)
    typer.echo(f"wrote {table} and {stats}")


@app.command("train")
def train_cmd(
    scores: Path = typer.Option(..., "--scores", help="scores.parquet from score-dataset (stats.csv beside it); "
                                                      "with --preset paper: the CC3M table of phase 1"),
    metrics: str = typer.Option(..., "--metrics", help="comma-separated metric columns, in adapter input order"),
    base: str = typer.Option("sdxl", "--base", help="base generator spec: sdxl, sd15, tiny-sd, tiny-sdxl, ..."),
    out: Path = typer.Option(..., "--out", help="output folder (checkpoint-N/ subfolders; phase1/ and phase2/ "
                                                "with --preset paper)"),
    preset: str | None = typer.Option(None, "--preset", help="paper: phase 1 (24,000 steps, CC3M, 512 px, lr 1e-4) "
                                                             "then phase 2 (3,000 steps, LAION subset "
                                                             "--phase2-scores, 1024 px, lr 1e-5), AdamW, bf16"),
    phase2_scores: Path | None = typer.Option(None, "--phase2-scores", help="--preset paper: the scored LAION "
                                                                           "subset of phase 2"),
    devices: int = typer.Option(PAPER_DEVICES, "--devices", min=1, help="GPUs the run uses, for the GPU-hour "
                                                                          "estimate (default: the official 5 x 8)"),
    phase: int = typer.Option(1, "--phase", help="the paper's training phase: 1 (24,000 steps, 512 px, lr 1e-4, "
                                                 "from scratch) or 2 (3,000 steps, 1024 px, lr 1e-5, fine-tunes "
                                                 "--init-from)"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="default: the phase's (24,000 / 3,000), or "
                                                                    "--epochs of the data"),
    epochs: int | None = typer.Option(None, "--epochs", help="train N epochs instead of the phase's steps (the "
                                                             "official phase-2 script: 3)"),
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

    from ..quality_base import require_unet_base
    from .generator import IQAAdapterGenerator
    from .phases import resolve_mixed_precision

    require_unet_base(base, IQAAdapterGenerator.needs_unet_cross_attention, "train iqa-adapter")  # before any load
    precision, why = resolve_mixed_precision(mixed_precision)
    common = {"base": base, "mixed_precision": precision, "grad_accum": grad_accum}
    if preset is not None:
        if preset != "paper":
            raise typer.BadParameter(f"--preset {preset!r} is unknown: the one training preset is 'paper'")
        if phase2_scores is None and not dry_run:
            raise typer.BadParameter("--preset paper trains phase 2 on a LAION subset: pass its scored table "
                                     "(score-dataset's scores.parquet) with --phase2-scores")
        # The command line's values override both phases (a shortened rehearsal on a tiny base, say); each one
        # is printed as a departure from the paper, never dropped silently.
        plans = [_phase_settings(1, resolution, lr, batch_size, epochs, max_steps, init_from, scores,
                                 out / "phase1", common),
                 _phase_settings(2, resolution, lr, batch_size, epochs, max_steps, None, phase2_scores,
                                 out / "phase2", common)]
        plans[1]["init_from"] = str(out / "phase1" / f"checkpoint-{plans[0]['max_steps']}" / "adapter.safetensors")
        departures = _departures(resolution=resolution, learning_rate=lr, batch_size=batch_size, epochs=epochs,
                                 max_steps=max_steps)
        for plan in plans:
            plan["departures_from_paper"] = departures
    else:
        plans = [_phase_settings(phase, resolution, lr, batch_size, epochs, max_steps, init_from, scores, out,
                                 common)]
        if plans[0]["needs_init"] and init_from is None and not dry_run:
            raise typer.BadParameter("--phase 2 fine-tunes the phase-1 adapter: pass it with --init-from")
    estimate = _estimate(plans, devices)
    typer.echo(estimate)  # first, before anything is loaded: what the settings cost on the paper's hardware
    if preset is not None and plans[0]["departures_from_paper"]:
        typer.echo("departures from the paper's phases (applied to both): "
                   + ", ".join(plans[0]["departures_from_paper"]))
    if dry_run:
        typer.echo(json.dumps(plans[0] if preset is None else {"preset": preset, "phases": plans}, sort_keys=True))
        return
    from iqabench.cli.fetch import check_before_training

    from .needs import adapter_training_needs

    check_before_training(adapter_training_needs(base, init_from if preset is None else None))
    for settings in plans:
        typer.echo(f"phase {settings['phase']}: {settings['resolution']} px, lr {settings['learning_rate']:g}, "
                   f"batch {settings['batch_size']}/device, {settings['max_steps'] or 'epochs'} steps, precision "
                   f"{why}")
        _train_phase(settings, metrics, n_tokens, projection, use_flag, pos_frequencies, quality_drop, text_drop,
                     both_drop, noise_offset, save_every, seed)


def _phase_settings(number: int, resolution: int | None, lr: float | None, batch_size: int | None,
                    epochs: int | None, max_steps: int | None, init_from: Path | None, scores: Path | None,
                    out: Path, common: dict) -> dict:
    """One phase's resolved settings: the command line's values over the paper's (``.phases``)."""
    from .phases import PAPER_OPTIMIZER
    from .phases import phase as training_phase

    try:
        preset = training_phase(number)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    epochs = epochs if epochs is not None else preset.epochs
    return {"phase": number, "resolution": resolution or preset.resolution,
            "learning_rate": lr if lr is not None else preset.learning_rate,
            "batch_size": batch_size or preset.batch_size, "epochs": epochs,
            "max_steps": max_steps if max_steps is not None else (None if epochs else preset.steps),
            "dataset": preset.dataset, "scores": str(scores) if scores else None, "out": str(out),
            "init_from": str(init_from) if init_from else None, "needs_init": preset.needs_init,
            "optimizer": PAPER_OPTIMIZER["optimizer"], "betas": list(PAPER_OPTIMIZER["betas"]),
            "weight_decay": PAPER_OPTIMIZER["weight_decay"], "source": preset.source, **common}


def _departures(**given: object) -> list[str]:
    """The command-line values that replace a paper phase's own, as ``--flag value`` strings."""
    return [f"--{name.replace('_', '-')} {value}" for name, value in given.items() if value is not None]


def _estimate(plans: list[dict], devices: int) -> str:
    from .phases import TrainingPhase

    parts, total = [], 0.0
    for settings in plans:
        if settings["max_steps"] is None:
            parts.append(f"phase {settings['phase']}: counted in epochs, not estimated")
            continue
        shape = TrainingPhase(settings["phase"], settings["resolution"], settings["learning_rate"],
                              settings["batch_size"], None, False, "", steps=settings["max_steps"])
        hours = shape.a100_hours(devices, settings["grad_accum"])
        total += hours
        parts.append(f"phase {settings['phase']} {settings['max_steps']:,} steps x {settings['batch_size']} x "
                     f"{devices} GPUs at {settings['resolution']} px = {hours:,.0f}")
    model = "the project's SDXL cost model, perf/cost_model.py, not a measurement"
    if "xl" not in str(plans[0]["base"]).lower():
        model += f"; the base {plans[0]['base']} is not SDXL, so this overstates its cost"
    return f"estimated cost: {total:,.0f} A100-hours ({'; '.join(parts)}; {model})"


def _train_phase(settings: dict, metrics: str, n_tokens: int, projection: str, use_flag: bool, pos_frequencies: int,
                 quality_drop: float, text_drop: float, both_drop: float, noise_offset: float, save_every: int,
                 seed: int) -> None:
    from iqabench.contracts.generators import build_generator
    from iqabench.execution.runtime import Runtime

    from .adapter import AdapterConfig
    from .dataset import ScoredImageDataset
    from .training import TrainConfig, build_adapter_for_training, train_adapter

    names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    dataset = ScoredImageDataset.from_table(Path(settings["scores"]), names, resolution=settings["resolution"])
    max_steps = settings["max_steps"]
    if max_steps is None:
        max_steps = settings["epochs"] * max(1, len(dataset) // (settings["batch_size"] * settings["grad_accum"]))
    generator = build_generator(settings["base"], Runtime(device="cpu", dtype="fp32"))
    pipe = generator.load_pipeline()
    config = AdapterConfig(names, n_tokens=n_tokens, projection=projection, use_flag=use_flag,
                           pos_frequencies=pos_frequencies, base=settings["base"],
                           stats={s.name: s for s in dataset.stats})
    init_from = Path(settings["init_from"]) if settings["init_from"] else None
    adapter = build_adapter_for_training(pipe, config, init_from)
    result = train_adapter(pipe, adapter, dataset, TrainConfig(
        output_dir=settings["out"], max_steps=max_steps, batch_size=settings["batch_size"],
        gradient_accumulation_steps=settings["grad_accum"], learning_rate=settings["learning_rate"],
        adam_beta1=settings["betas"][0], adam_beta2=settings["betas"][1], weight_decay=settings["weight_decay"],
        quality_drop=quality_drop, text_drop=text_drop, both_drop=both_drop, noise_offset=noise_offset,
        mixed_precision=settings["mixed_precision"], save_every=save_every, seed=seed))
    typer.echo(f"trained to step {result.step}; last checkpoint {result.checkpoint}")


def mount(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Entry point of the ``iqabench.cli`` group (see pyproject.toml)."""
    from iqabench.cli.fetch import register_train_needs

    app.command("score-dataset")(score_dataset_cmd)
    groups["train"].command("iqa-adapter")(train_cmd)
    # `iqabench fetch train iqa-adapter ...`: the same needs the command checks before it trains
    register_train_needs("iqa-adapter", _training_needs, uses=("base",))


def _training_needs(params: dict) -> list:
    from .needs import adapter_training_needs

    return adapter_training_needs(params["base"], params["init_from"] if params["preset"] is None else None)
