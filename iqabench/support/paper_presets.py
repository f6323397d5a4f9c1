"""The papers' own settings, one named preset per figure or table: ``iqabench run <benchmark> --preset paper:<id>``
(``--preset paper`` alone picks the benchmark's only paper setting, e.g. ``seed-consistency`` -> Fig. 14).

A preset fills the run's generators, metrics, seeds, prompt limit and benchmark options with the paper's values;
anything given on the command line wins (and is reported as a departure). Generation settings (steps, CFG,
size, lambda, alpha, guidance formula) come from the generator defaults, which are the papers' (issue 16), so a
preset names plain specs such as ``iqa-adapter:topiq``. Prompt sets the project cannot ship (Lexica, COCO
captions, DrawBench, DiffusionDB) are named in :attr:`PaperSetting.prompts_note` and must be passed with
``--prompts``; a preset never invents a prompt list.

Every preset lists what could *not* be confirmed offline (``unconfirmed``): the value used there is the
project's, said so in ``docs/paper_settings.md``, not presented as the paper's. The papers: Abud et al.,
*IQA-Adapter* (ICCV 2025, arXiv 2412.01794; official code X1716/IQA-Adapter) and Yang et al., *ACPO* (arXiv
2604.26348).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contracts.errors import UserInputError

PREFIX = "paper:"


@dataclass(frozen=True)
class PaperSetting:
    id: str
    paper: str  # "IQA-Adapter" or "ACPO"
    what: str  # the figure / table and what it shows
    benchmark: str
    generators: tuple[str, ...]
    metrics: tuple[str, ...]
    seeds: tuple[int, ...]
    limit: int | None
    prompts: str | None  # a built-in set, or None: the paper's set is not shipped (see prompts_note)
    prompts_note: str
    needs: str = "prompts"  # what the user must add: "prompts" (--prompts) or "reference" (--option reference=)
    options: Mapping[str, Any] = field(default_factory=dict)
    #: what the generator defaults contribute, stated for the docs and checked by the tests
    generation: Mapping[str, Any] = field(default_factory=dict)
    images: int = 0  # images the run generates (all generators and baselines), for the cost model
    model: str = "sdxl"  # cost-model family of the generated images: "sdxl" (1024 px) or "sd14" (512 px)
    unconfirmed: tuple[str, ...] = ()
    #: ``--option`` values the user must give (files the project cannot ship) -> the file the paper used
    required_options: Mapping[str, str] = field(default_factory=dict)


_SDXL = {"base": "sdxl (stabilityai/stable-diffusion-xl-base-1.0)", "steps": 35, "guidance_scale": 7.5,
         "height": 1024, "width": 1024}
_ADAPTER = {**_SDXL, "scale (lambda)": 0.5, "target": "p99"}
RELEASED_ADAPTERS = ("iqa-adapter:topiq", "iqa-adapter:hyperiqa", "iqa-adapter:topiq+laion_aes")
#: Table 5 ranks COCO by "the average score across all IQA/IAA metrics": the pyiqa metrics the official code scores
#: CC3M with (X1716/IQA-Adapter metric_calculation/calc_metrics_CC3M.py, both its active and its commented list).
TABLE5_METRICS = ("topiq_nr", "topiq_nr-flive", "topiq_nr-spaq", "maniqa", "clipiqa+", "musiq-paq2piq", "arniqa",
                  "arniqa-kadid", "topiq_iaa", "dbcnn", "laion_aes", "liqe_mix", "liqe", "maniqa-pipal",
                  "nima-vgg16-ava", "hyperiqa", "tres-flive", "arniqa-flive")
_ACPO_GENERATION = {"base": "sd14 (CompVis/stable-diffusion-v1-4)", "steps": 50, "guidance_scale": 7.5,
                    "height": 512, "width": 512,
                    "train": "iqabench train acpo --base sd14 (the paper's defaults: rollout x0 over the last 10 "
                             "steps, MSE over all timesteps, LoRA on every linear layer, Adam lr 2e-5, 1000 steps, "
                             "T_max 100, lambda_q 0.1)"}
ACPO_METRICS = ("pickscore", "clipscore", "ipce:runs/ipce/ipce.safetensors")
_ACPO_UNCONFIRMED = ("sampling steps and CFG of the evaluation (diffusers' SD v1.4 defaults 50 / 7.5 are used)",
                     "the number of prompts and seeds (the cost is given per 1,000 prompts, model + base)",
                     "the CLIPScore convention (Hessel et al.'s 2.5 max(cos, 0) is used; clipscore_100 is the "
                     "100x one)",
                     "the evaluator used for training (any of the three kinds can be passed)",
                     "lambda_anchor, LoRA rank, batch size (the paper is silent; see 'Where the papers are silent')")

SETTINGS: dict[str, PaperSetting] = {s.id: s for s in (
    PaperSetting(
        id="iqa-fig3a", paper="IQA-Adapter",
        what="Fig. 3a: RelGain (%) of the IQA-Adapters over the SDXL base, per IQA/IAA metric",
        benchmark="relgain",
        generators=("iqa-adapter:topiq", "iqa-adapter:hyperiqa", "iqa-adapter:topiq+laion_aes"),
        metrics=("topiq_nr", "hyperiqa", "laion_aes"),
        seeds=(0,), limit=8200, prompts=None,
        prompts_note="8,200 Lexica prompts (not shipped: pass them with --prompts lexica.txt)",
        generation=_ADAPTER,
        images=8200 * 4, model="sdxl",
        unconfirmed=("the figure has 22 adapters; only the 3 released ones can be run, so 3 are listed",
                     "its full metric list; the command scores the released adapters' own metrics",
                     "the seed per prompt (one image per prompt, seed 0, is ours)"),
    ),
    PaperSetting(
        id="iqa-table5", paper="IQA-Adapter",
        what="Table 5: FID against the full MS-COCO training set (FID-Full) and its top-10% / top-25% subsets by "
             "the average IQA/IAA score, IS, KID, CLIP-T, CLIP-I",
        benchmark="fid-topk",
        generators=("sdxl", "iqa-adapter:topiq"),
        metrics=TABLE5_METRICS,
        seeds=(0,), limit=10000, prompts=None,
        prompts_note="10,000 COCO captions with their images, as --option reference=coco_10k.csv "
                     "(caption,image pairs; not shipped); the captions are the prompts",
        needs="reference",
        options={"topk": "25,10"},
        required_options={
            "reference": "coco_10k.csv: 10,000 MS-COCO caption,image pairs (the captions generated from; CLIP-I "
                         "partners)",
            "reference_stats": "coco_train.npz: Inception statistics of the MS-COCO training set, written by "
                               "`iqabench fid-stats build coco/train2017/ --out coco_train.npz`",
            "topk_reference": "coco/train2017/: the MS-COCO training images, ranked by the mean z-score of every "
                              "metric of the run for the top-k% subsets",
        },
        generation=_ADAPTER,
        images=2 * 10000, model="sdxl",
        unconfirmed=("which 10,000 captions are generated from",
                     "the metric list: 'all IQA/IAA metrics' is read as the 18 pyiqa metrics the official code "
                     "scores (X1716/IQA-Adapter metric_calculation/calc_metrics_CC3M.py), mean of z-scores",
                     "the generators of every row (the base and the released topiq adapter are listed)"),
    ),
    PaperSetting(
        id="iqa-fig14", paper="IQA-Adapter",
        what="Fig. 14 (supplementary Sec. 17): per-generation RelGain over 25 prompts x 100 seeds, for every "
             "adapter",
        benchmark="seed-consistency",
        generators=RELEASED_ADAPTERS,
        metrics=("topiq_nr", "hyperiqa", "laion_aes"),
        seeds=tuple(range(100)), limit=25, prompts=None,
        prompts_note="25 prompts (the paper's list is not shipped: pass it with --prompts)",
        generation=_ADAPTER,
        images=25 * 100 * (len(RELEASED_ADAPTERS) + 1), model="sdxl",
        unconfirmed=("the 25 prompts", "the figure's adapters beyond the 3 released ones"),
    ),
    PaperSetting(
        id="iqa-guidance", paper="IQA-Adapter",
        what="Sec. 3.1: gradient IQA guidance on SDXL at alpha = 30 (the guidance rows next to the adapters)",
        benchmark="relgain",
        generators=("guidance:topiq_nr",),
        metrics=("topiq_nr", "laion_aes"),
        seeds=(0,), limit=None, prompts=None,
        prompts_note="the same prompts as Fig. 3a (Lexica; pass them with --prompts)",
        generation={**_SDXL, "alpha": 30.0, "formula": "eps - alpha*omega(t)*grad log f(D(z_t)) (no sigma_t)",
                    "omega": "0 -> 1 linear over the sampling steps"},
        images=8200 * 2, model="sdxl",
        unconfirmed=("in which figure or table the guidance numbers appear", "the prompt count"),
    ),
    PaperSetting(
        id="acpo-table2", paper="ACPO",
        what="Table 2 (DrawBench): paired comparison (improvement, std, paired t, p, win rate) of the ACPO LoRA on "
             "SD v1.4 against SD v1.4 in PickScore, CLIPScore and IPCE",
        benchmark="relgain",
        generators=("acpo:runs/acpo-sd14",), metrics=ACPO_METRICS,
        seeds=(0,), limit=None, prompts=None,
        prompts_note="DrawBench's 200 prompts (licence not stated by the Imagen release: not shipped; pass them "
                     "with --prompts drawbench.txt)",
        generation=_ACPO_GENERATION, images=2 * 200, model="sd14", unconfirmed=_ACPO_UNCONFIRMED,
    ),
    PaperSetting(
        id="acpo-table2-parti", paper="ACPO",
        what="Table 2 (PartiPrompts): the same paired comparison on PartiPrompts",
        benchmark="relgain",
        generators=("acpo:runs/acpo-sd14",), metrics=ACPO_METRICS,
        seeds=(0,), limit=None, prompts="parti",
        prompts_note="PartiPrompts, shipped (Apache-2.0): the built-in set 'parti'",
        generation=_ACPO_GENERATION, images=2 * 1632, model="sd14", unconfirmed=_ACPO_UNCONFIRMED,
    ),
    PaperSetting(
        id="acpo-table2-diffusiondb", paper="ACPO",
        what="Table 2 (DiffusionDB): the same paired comparison on a sample of unseen DiffusionDB prompts",
        benchmark="relgain",
        generators=("acpo:runs/acpo-sd14",), metrics=ACPO_METRICS,
        seeds=(0,), limit=None, prompts=None,
        prompts_note="a sample of DiffusionDB prompts unseen in training (CC0, but the paper's sample is not "
                     "known: pass it with --prompts diffusiondb_sample.txt)",
        generation=_ACPO_GENERATION, images=2 * 1000, model="sd14",
        unconfirmed=("the DiffusionDB sample and its size (the cost is given per 1,000 prompts)",
                     *_ACPO_UNCONFIRMED[1:]),
    ),
)}


def get(name: str) -> PaperSetting:
    """The preset ``paper:<id>`` (or ``<id>``); an unknown id gets the list of known ones."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if key not in SETTINGS:
        raise UserInputError(f"unknown preset {name!r}: choose one of "
                             f"{', '.join(PREFIX + k for k in SETTINGS)} (see docs/paper_settings.md)")
    return SETTINGS[key]


def for_benchmark(name: str, benchmark: str) -> str:
    """``--preset paper`` alone: the one paper setting of ``benchmark`` (an error lists them when there are more)."""
    if name != "paper":
        return name
    ids = [k for k, s in SETTINGS.items() if s.benchmark == benchmark]
    if len(ids) != 1:
        choices = ", ".join(PREFIX + k for k in ids) if ids else "none"
        raise UserInputError(f"--preset paper is ambiguous or unknown for {benchmark} (its paper settings: {choices}); "
                             "name one, e.g. --preset paper:<id>")
    return PREFIX + ids[0]


def apply(name: str, benchmark: str, given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Run fields for ``--preset name``: the paper's values where ``given`` (the command line) has None.

    ``given`` holds ``generators``, ``metrics``, ``seeds``, ``limit``, ``prompts`` (None when not given) and
    ``options`` (a dict, merged over the preset's). Returns (fields, departures from the paper's setting).
    """
    name = for_benchmark(name, benchmark)
    setting = get(name)
    if benchmark != setting.benchmark:
        raise UserInputError(f"preset {name!r} reproduces a {setting.benchmark} run, not {benchmark}: "
                             f"iqabench run {setting.benchmark} --preset {PREFIX}{setting.id}")
    paper = {"generators": list(setting.generators), "metrics": list(setting.metrics),
             "seeds": list(setting.seeds), "limit": setting.limit, "prompts": setting.prompts}
    fields: dict[str, Any] = {}
    departures: list[str] = []
    for key, value in paper.items():
        mine = given.get(key)
        if mine is None or mine == []:
            fields[key] = value
        else:
            fields[key] = mine
            if mine != value and not (key == "prompts" and value is None):
                departures.append(f"{key}={mine!r} (the paper's: {value!r})")
    options = dict(setting.options)
    for key, value in (given.get("options") or {}).items():
        if key in options and options[key] != value:
            departures.append(f"option {key}={value!r} (the paper's: {options[key]!r})")
        options[key] = value
    fields["options"] = options
    if setting.needs == "reference":
        missing = [k for k in setting.required_options or {"reference": setting.prompts_note} if k not in options]
        if missing:
            files = "; ".join(f"--option {k}=<{(setting.required_options or {}).get(k, setting.prompts_note)}>"
                              for k in missing)
            raise UserInputError(f"preset {name!r} needs files the project cannot ship: {files}")
        fields["prompts"] = fields["prompts"] or "smoke"  # unused: the reference captions are the prompts
    elif fields["prompts"] is None:
        raise UserInputError(f"preset {name!r} needs the paper's prompts, which are not shipped: "
                             f"{setting.prompts_note}")
    return fields, departures
