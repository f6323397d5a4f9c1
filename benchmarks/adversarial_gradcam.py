"""Adversarial GradCAM: does guiding on an IQA metric improve images, or only fool that metric?

IQA-Adapter paper Sec. 5.2 and supplementary Sec. 10.1, 19 (Figs. 5a, 9b, 20).
For every target metric m the plan has the base model, gradient guidance on m
(``guidance:m``, same base and options) and, optionally, IQA-Adapter
generators (``--generator``). The analysis gives

(a) the cross-metric transfer matrix: RelGain of every panel metric when
    guiding on each target (Fig. 9b), and an *inflation index* per target =
    gain on the target minus mean gain on the other panel metrics (large means
    the target metric was exploited rather than quality improved);
(b) Grad-CAM maps of the target IQA model on the base / guided / adapter images
    (pytorch-grad-cam, a regression target on the scalar score, the target
    layer per known architecture or set by the user, a reshape transform for
    transformer token maps), overlaid side by side with scores;
(c) how far the attention moved: 1 - Pearson correlation of the CAMs of the
    base image and the method's image (0 = same map, up to 2 = inverted).

Known target layers: only architectures checked here are listed (pyiqa's
CNNIQA); any other nn.Module falls back to its last Conv2d, which the report
states, and users register their own with :func:`register_cam_layer`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from iqabench.analysis.labels import figure_labels
from iqabench.analysis.number_format import format_number
from iqabench.analysis.stats import describe_method, mean_ci, relative_gains, unit_test
from iqabench.benchmark import AnalysisContext, BaseBenchmark, PlannedItem, Result, register_benchmark
from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import GeneratorPool
from iqabench.contracts.registry import METRICS
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import build_metric, metric_info, parse_metric_list

from .sweeps import new_figure


@dataclass(frozen=True)
class CamLayer:
    layer: str  # dotted submodule path inside the network
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None


def vit_reshape_transform(tokens: torch.Tensor, has_cls_token: bool = True) -> torch.Tensor:
    """[N, (1+)H*W, C] transformer tokens -> [N, C, H, W] so Grad-CAM can weight channels (square grid assumed)."""
    if has_cls_token:
        tokens = tokens[:, 1:, :]
    side = int(round(tokens.shape[1] ** 0.5))
    if side * side != tokens.shape[1]:
        raise ValueError(f"cannot reshape {tokens.shape[1]} tokens into a square grid; register a reshape transform")
    return tokens.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


# architecture class name -> target layer (checked offline on random-weight instances)
# TOPIQ's CFANet: the deepest stage of its ResNet-50 semantic backbone, the usual Grad-CAM target for ResNets.
KNOWN_CAM_LAYERS: dict[str, CamLayer] = {"CNNIQA": CamLayer("conv1"), "CFANet": CamLayer("semantic_model.layer4")}


def register_cam_layer(architecture: str, layer: str, reshape: Callable | None = None, *,
                       overwrite: bool = False) -> None:
    """Tell the CAM path which layer to use for an architecture (class name), e.g. a ViT block's norm."""
    if architecture in KNOWN_CAM_LAYERS and not overwrite:
        raise ValueError(f"architecture {architecture!r} already has a CAM layer; pass overwrite=True to replace it")
    KNOWN_CAM_LAYERS[architecture] = CamLayer(layer, reshape)


def network_of(module: nn.Module) -> nn.Module:
    """The scoring network: pyiqa wraps it in an InferenceModel as ``.net``; user modules are themselves."""
    return getattr(module, "net", module) if isinstance(getattr(module, "net", None), nn.Module) else module


def resolve_cam_layer(network: nn.Module, layer: str | None = None) -> tuple[str, CamLayer, str]:
    """(layer path, CamLayer, how it was chosen): the user's choice, the known one, or the last Conv2d."""
    if layer:
        return layer, CamLayer(layer), "set by the user"
    known = KNOWN_CAM_LAYERS.get(type(network).__name__)
    if known is not None:
        return known.layer, known, f"known layer for {type(network).__name__}"
    convs = [name for name, sub in network.named_modules() if isinstance(sub, nn.Conv2d)]
    if not convs:
        raise UserInputError(f"no Grad-CAM target layer known for {type(network).__name__} and it has no Conv2d; pass "
                             "--option cam_layer=<submodule path> (and register a reshape transform for token outputs)")
    return convs[-1], CamLayer(convs[-1]), f"last Conv2d of {type(network).__name__} (fallback)"


class ScoreTarget:
    """Grad-CAM target for a scalar-output IQA model: the score itself, negated for lower-is-better metrics,
    so highlighted regions are the ones that raise *quality* as the metric sees it."""

    def __init__(self, lower_better: bool):
        self.sign = -1.0 if lower_better else 1.0

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.sign * output.reshape(-1)[0]


class _ScalarOutput(nn.Module):
    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.reshape(x.shape[0], -1)[:, :1]


def compute_cams(network: nn.Module, images: torch.Tensor, cam_layer: CamLayer, lower_better: bool) -> np.ndarray:
    """Grad-CAM maps [N, H, W] in [0, 1] of ``network`` (scalar score) on ``images`` [N, 3, H, W] in [0, 1]."""
    from pytorch_grad_cam import GradCAM

    model = _ScalarOutput(network).eval()
    layer = network.get_submodule(cam_layer.layer)
    with torch.enable_grad():
        inputs = images.detach().float().clone().requires_grad_(True)  # frozen weights: grads flow via the input
        with GradCAM(model=model, target_layers=[layer], reshape_transform=cam_layer.reshape) as cam:
            maps = cam(input_tensor=inputs, targets=[ScoreTarget(lower_better)] * images.shape[0])
    return np.asarray(maps, dtype=np.float32)


def cam_shift(base: np.ndarray, other: np.ndarray) -> float:
    """1 - Pearson correlation of two CAMs (0: same attention; NaN when a map is constant)."""
    a, b = np.asarray(base, float).ravel(), np.asarray(other, float).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(1.0 - np.corrcoef(a, b)[0, 1])


def inflation_index(transfer: pd.DataFrame) -> pd.Series:
    """Per target metric (row): RelGain on the target minus the mean RelGain on the other panel metrics."""
    out = {}
    for target in transfer.index:
        if target not in transfer.columns:
            raise UserInputError(f"target metric {target!r} is not in the panel {list(transfer.columns)}")
        others = transfer.loc[target].drop(target)
        out[target] = float(transfer.loc[target, target] - others.mean()) if others.notna().any() else np.nan
    return pd.Series(out, name="inflation_index")


def inflation_table(gains: dict[tuple[str, str], np.ndarray], targets: list[str], panel: list[str],
                    prompts: list[str]):
    """The inflation index per target with a 95% CI: per item, the gain on the target minus the mean gain on the
    other panel metrics, averaged over items with a bootstrap CI clustered by prompt (equal to
    :func:`inflation_index` of the matrix when every gain is finite: a difference of means is a mean of
    differences)."""
    rows = []
    for target in targets:
        own = gains[(target, target)]
        others = [gains[(target, m)] for m in panel if m != target]
        if not others:
            continue
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an item with no finite other gain: NaN, dropped
            per_item = own - np.nanmean(np.vstack(others), axis=0)
        est = mean_ci(per_item, np.asarray(prompts, dtype=object))
        rows.append({"target": target, "inflation_index": est.value, "inflation_index_ci_low": est.ci_low,
                     "inflation_index_ci_high": est.ci_high, "n_images": est.n, "n_units": est.n_clusters,
                     "ci_method": est.method})
    out = pd.DataFrame(rows, columns=["target", "inflation_index", "inflation_index_ci_low",
                                      "inflation_index_ci_high", "n_images", "n_units", "ci_method"])
    from iqabench.analysis.decisions import level_table

    return level_table(out, unit="prompt", footnote=(
        "Inflation index (percentage points): RelGain on the guided metric minus the mean RelGain on the other "
        "panel metrics, per item, averaged (a level: no test). " + describe_method(out["ci_method"].tolist())))


def cam_shift_summary(shifts: pd.DataFrame):
    """Mean CAM shift per (target, method) with a 95% bootstrap CI clustered by prompt."""
    rows = []
    for (target, method), group in shifts.groupby(["target", "method"], sort=False):
        est = mean_ci(group.cam_shift.to_numpy(float), group.prompt_id.to_numpy(object))
        rows.append({"target": target, "method": method, "cam_shift": est.value, "cam_shift_ci_low": est.ci_low,
                     "cam_shift_ci_high": est.ci_high, "n_images": est.n, "n_units": est.n_clusters,
                     "ci_method": est.method})
    from iqabench.analysis.decisions import level_table

    return level_table(pd.DataFrame(rows), unit="prompt", footnote=(
        "cam_shift = 1 − Pearson correlation between the CAM of the base image and of the method's image (0: "
        "attention unchanged; a level: no test). " + describe_method([r["ci_method"] for r in rows])))


def relgain_cell(method: str, metric: str, base: np.ndarray, other: np.ndarray, prompts: list[str],
                 lower_better: bool) -> dict:
    """One cell of the transfer matrix: mean RelGain (%) of ``other`` over ``base`` on the same items, with a 95%
    bootstrap CI clustered by prompt (several seeds of one prompt are not independent)."""
    gains = relative_gains(base, other, lower_better).gains
    est = mean_ci(gains, np.asarray(prompts, dtype=object))
    test = unit_test(gains, np.asarray(prompts, dtype=object))  # one-sample t on per-prompt mean gains
    return {"method": method, "metric": metric, "relgain": est.value, "relgain_ci_low": est.ci_low,
            "relgain_ci_high": est.ci_high, "p_value": test.p_value, "n": est.n, "n_units": test.n_units,
            "unit": test.unit, "ci_method": est.method}


def transfer_table(cells: list[dict], methods: list[str], panel: list[str]) -> pd.DataFrame:
    """Methods x panel metrics: RelGain per metric, then its ``_ci_low``/``_ci_high`` columns (shown as
    ``est [low, high]`` in the report); the run's headline (a signed quantity: "n.s." where the CI includes 0)."""
    long = pd.DataFrame(cells)
    out = pd.DataFrame({"method": methods})
    for column, suffix in (("relgain", ""), ("relgain_ci_low", "_ci_low"), ("relgain_ci_high", "_ci_high"),
                           ("p_value", "_p")):
        wide = long.pivot(index="method", columns="metric", values=column).reindex(index=methods, columns=panel)
        for metric in panel:
            out[metric + suffix] = wide[metric].to_numpy(float)
    units = long.pivot(index="method", columns="metric", values="n_units").reindex(index=methods, columns=panel)
    out = out[["method", *[m + s for m in panel for s in ("", "_ci_low", "_ci_high", "_p")]]]
    out["n_units"] = units.min(axis=1).to_numpy(float)
    return out


def transfer_typed(out: pd.DataFrame, long: pd.DataFrame, panel: list[str]):
    """The transfer matrix as a typed Table (each panel column an effect, Holm over all cells) and its Headline."""
    from iqabench.analysis.decisions import decision_sentence, effect_table, unit_sentence, wide_headline

    unit = "/".join(dict.fromkeys(long["unit"])) if len(long) else ""
    note = ("RelGain (%) of each panel metric over the base model on the same prompts and seeds, "
            "signs aligned so that positive = better. "
            + describe_method(long["ci_method"].tolist() if len(long) else []) + " "
            + unit_sentence(unit, out["n_units"].to_numpy(float) if len(out) else None)
            + " <metric>_p: one-sample t-test of mean gain 0 on per-unit mean gains. " + decision_sentence())
    table = effect_table(out, {m: m + "_p" for m in panel}, footnote=note, unit=unit)
    head = wide_headline("transfer_matrix", out, row_key="method", columns=panel,
                         quantity="RelGain (%) over the base model", signed=True, higher_better=True,
                         footnote=note, unit=unit)
    return table, head


def transfer_figure(table: pd.DataFrame, panel: list[str], significant: pd.DataFrame | None = None):
    """The transfer matrix as a heatmap with each cell's CI; cells whose CI includes 0 are hatched and faded."""
    from iqabench.analysis.plotting import ci_table_heatmap

    return ci_table_heatmap(
        table, "method", panel, "RelGain, % (method x panel metric)", column_axis="metric", significant=significant,
        caption="Mean relative gain (%) of every panel metric over the base model when guiding on one target "
                "metric (rows), with its 95% CI (bootstrap over prompts), signs aligned so that positive (blue) is "
                "better; hatched, faded cells: not significant (Holm-adjusted p >= 0.05 over the matrix; "
                "without tests: the CI includes 0). A large gain on the guided metric alone suggests the guidance "
                "exploits that metric.")


@register_benchmark("adversarial-gradcam", description="Cross-metric transfer of IQA guidance, inflation index "
                    "and Grad-CAM of the target model (paper Sec. 5.2, Figs. 5a, 9b, 20)")
class AdversarialGradCAM(BaseBenchmark):
    options = {
        "guided_metrics": "metrics to guide towards, '/'-separated (required)",
        "targets": "old spelling of guided_metrics (warns)",
        "base": "base generator spec for the guided runs (default: --baseline)",
        "alpha": "guidance strength (default 30)",
        "cam_items": "items to explain with Grad-CAM (default 2)",
        "cam_layer": "network layer for Grad-CAM (default: picked per metric)",
    }

    def _targets(self, spec: RunSpec) -> list[str]:
        """The metrics to guide on: ``guided_metrics=m1/m2``. ``targets=`` was its old name; elsewhere ``targets``
        means percentile targets of an IQA-Adapter (condition-sweep, fr-distances), so it was renamed."""
        value = spec.options.get("guided_metrics")
        if value is None and spec.options.get("targets") is not None:
            warnings.warn("adversarial-gradcam: --option targets= is now spelled guided_metrics= (targets means "
                          "percentile targets in the other benchmarks)", FutureWarning, stacklevel=2)
            value = spec.options["targets"]
        targets = parse_metric_list(str(value).replace("/", ",")) if value else []
        if not targets:
            raise UserInputError("adversarial-gradcam needs the metrics to guide on: --option guided_metrics=m1/m2 "
                                 "(differentiable NR metrics, e.g. topiq_nr, or a registered model)")
        return targets

    def _setup(self, spec: RunSpec, generators: GeneratorPool) -> tuple[str, list[str], dict[str, str], list[str]]:
        targets = self._targets(spec)
        named = generators.canonical_list(spec.generators)
        adapters = [g for g in named if generators.family(g) != "guidance"]
        base = spec.options.get("base") or spec.baseline
        if not base and not adapters:
            raise UserInputError("adversarial-gradcam needs a base model: --option base=SPEC or an adapter generator")
        base = generators.canonical(str(base)) if base else generators.baseline(adapters[0])
        adapters = [a for a in adapters if a != base]
        alpha = float(spec.options.get("alpha", 30.0))
        guided = {t: generators.wrap("guidance", t, base, alpha=alpha) for t in targets}
        return base, targets, guided, adapters

    def plan(self, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
        base, _, guided, adapters = self._setup(spec, generators)
        items = self.work_items(spec)
        return [PlannedItem(g, i) for g in [base, *guided.values(), *adapters] for i in items]

    def metrics_for(self, spec: RunSpec, plan: list[PlannedItem]) -> dict[str, list[int]]:
        panel = super().metrics_for(spec, plan)
        targets = self._targets(spec)
        return {**panel, **{t: list(range(len(plan))) for t in targets}}

    def analyze(self, ctx: AnalysisContext) -> Result:
        spec = ctx.spec
        base, targets, guided, adapters = self._setup(spec, ctx.generators)
        panel = list(dict.fromkeys([*parse_metric_list(spec.metrics), *targets]))
        scores = {m: ctx.scores(m) for m in panel}
        key_of = {(p.generator, p.item.prompt_id, p.item.seed): k for p, k in zip(ctx.plan, ctx.image_keys,
                                                                                  strict=True)}
        items = list({(p.item.prompt_id, p.item.seed): p.item for p in ctx.plan}.values())
        methods = {f"guidance on {t}": g for t, g in guided.items()} | {a: a for a in adapters}
        rows = []
        item_gains: dict[tuple[str, str], np.ndarray] = {}
        # issue 25: a method that made the base's pixels (alpha 0, a vanishing gradient) has no gain to measure
        identical = {g: c for g, c in ctx.identical_to({g: base for g in methods.values()}).items() if c.all_identical}
        for label, generator in methods.items():
            for m in panel:
                b = np.array([_v(scores[m].get(key_of[(base, i.prompt_id, i.seed)])) for i in items])
                g = np.array([_v(scores[m].get(key_of[(generator, i.prompt_id, i.seed)])) for i in items])
                if generator in identical:  # blank, not 0.00 [0.00, 0.00] (the notes say why)
                    g = np.full_like(g, np.nan)
                rows.append(relgain_cell(label, m, b, g, [i.prompt_id for i in items], metric_info(m).lower_better))
                if label.startswith("guidance on "):
                    gains = relative_gains(b, g, metric_info(m).lower_better).gains
                    item_gains[(label[len("guidance on "):], m)] = gains
        table = transfer_table(rows, list(methods), panel)
        matrix = table.set_index("method")[panel]
        transfer = matrix.loc[[f"guidance on {t}" for t in targets]].rename(index=lambda s: s[len("guidance on "):])
        inflation = inflation_index(transfer)

        result = Result(self.name, notes=[c.sentence("raise alpha or guide on a metric whose gradient reaches the "
                                                     "image") for c in identical.values()])
        result.notes.append(f"Base model: {base}. RelGain (%) of every panel metric over the base on the same prompts "
                            "and seeds; positive = better. Inflation index = gain on the guided metric minus the "
                            "mean gain on the other panel metrics.")
        typed, head = transfer_typed(table, pd.DataFrame(rows), panel)
        result.add_table("transfer_matrix", typed)
        result.headlines.append(head)
        result.add_table("inflation_index", inflation_table(item_gains, targets, panel, [i.prompt_id for i in items]))
        result.figures["transfer_matrix"] = transfer_figure(table, panel, head.significant)
        self._cams(ctx, result, base, targets, guided, adapters, items, key_of, scores)
        result.summary = {"base": base, "targets": targets, "panel": panel, "adapters": adapters,
                          "inflation_index": inflation.to_dict(), "n_items": len(items)}
        return result

    def _cams(self, ctx, result, base, targets, guided, adapters, items, key_of, scores) -> None:
        from iqabench.analysis.plotting import MIN_FONT_PT, ellipsize

        spec = ctx.spec
        n_items = int(spec.options.get("cam_items", 2))
        runtime = ctx.runtime
        shift_rows = []
        for target in targets:
            try:
                metric = build_metric(target, runtime)
                network = network_of(metric.module)
                layer_name, cam_layer, how = resolve_cam_layer(network, spec.options.get("cam_layer"))
            except Exception as exc:  # a metric without a usable layer must not hide the transfer matrix
                result.notes.append(f"Grad-CAM skipped for {target}: {exc}")
                continue
            entry = METRICS.get(target)
            result.notes.append(f"Grad-CAM of {target}: {type(network).__name__}, target layer {layer_name!r} "
                                f"({how}); model: {entry.description}.")
            columns = {"base": base, f"guidance on {target}": guided[target]} | {a: a for a in adapters}
            chosen = [i for i in items if all(ctx.store.has_image(key_of[(g, i.prompt_id, i.seed)])
                                              for g in columns.values())][:n_items]
            if not chosen:
                result.notes.append(f"Grad-CAM of {target}: no item has all its images; nothing to show.")
                continue
            fig, axes = new_figure(len(chosen) * len(columns), width=2.6, height=2.8, max_cols=len(columns))
            titles = figure_labels(columns, 34)  # one label per column, unique within the figure
            panels = iter(axes)
            for item in chosen:
                keys = [key_of[(g, item.prompt_id, item.seed)] for g in columns.values()]
                arrays = [np.asarray(ctx.store.load_image(k), dtype=np.float32) / 255.0 for k in keys]
                tensor = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(metric.device)
                cams = compute_cams(network, tensor, cam_layer, metric.lower_better)
                for (label, _), key, array, cam in zip(columns.items(), keys, arrays, cams, strict=True):
                    ax = next(panels)
                    ax.imshow(array)
                    ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
                    value = scores[target].get(key)
                    title = f"{titles[label]}\n{ellipsize(target, 24)} = {_fmt(value)}"
                    ax.set_title(title, fontsize=MIN_FONT_PT)
                    ax.axis("off")
                    if label != "base":
                        shift_rows.append({"target": target, "prompt_id": item.prompt_id, "seed": item.seed,
                                           "method": label, "cam_shift": cam_shift(cams[0], cam)})
            fig.tight_layout()
            fig.set_label(f"Grad-CAM of {target} (jet overlay: where the metric looks) on the base image, the "
                          f"image guided on {target} and each adapter's image, for the same prompt and seed; titles "
                          "give each image's score.")
            result.figures[f"gradcam_{target}"] = fig
        if shift_rows:
            shifts = pd.DataFrame(shift_rows)
            result.tables["cam_shift"] = shifts
            result.add_table("cam_shift_mean", cam_shift_summary(shifts))


def _v(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else format_number(value)
