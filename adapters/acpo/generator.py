"""The ``acpo`` generator: a base diffusers pipeline with an ACPO LoRA on its UNet.

Specs::

    acpo:./runs/acpo                       the folder `iqabench train acpo` wrote (lora.json names the base)
    acpo:./runs/acpo/checkpoint-500
    acpo:/path/lora_folder[base=sd14,steps=30]

Options: ``base`` (overrides the base stored in ``lora.json``) and every option of
the base model. The baseline is the base model *without* the LoRA, with the same
generation options, so RelGain's paired statistics compare fine-tuned vs base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from iqabench.contracts.generators import register_generator
from iqabench.contracts.options import Options, option
from iqabench.contracts.specs import GeneratorSpec, SpecError
from iqabench.execution.runtime import Runtime

from ..quality_base import QualityGenerator
from .lora import LORA_FILE, load_lora


@dataclasses.dataclass(frozen=True)
class AcpoOptions(Options):
    """An ACPO LoRA on a base model; every other option goes to the base model."""

    base: str | None = option(None, "base generator spec; default: the base named in the folder's lora.json")


ACPO_OPTIONS: dict[str, Any] = AcpoOptions.defaults()


class AcpoGenerator(QualityGenerator):
    """The base model's pipeline whose UNet carries the LoRA from ``acpo:<folder>``."""

    fingerprint_class = "acpo/v1"
    options_class = AcpoOptions
    refused_bases = ("acpo", "guidance")
    refusal = "the base must be a plain diffusers generator, not {base!r}"
    needs_unet_cross_attention = "ACPO's checkpoints are LoRA weights for a UNet's attention layers"

    def __init__(self, spec: GeneratorSpec, runtime: Runtime):
        if not spec.variant:
            raise SpecError("generator 'acpo' needs the folder of a trained LoRA: acpo:./runs/acpo")
        self.folder = Path(spec.variant).expanduser()
        if not (self.folder / LORA_FILE).is_file():
            raise SpecError(f"acpo: {self.folder} holds no {LORA_FILE}; pass the output folder of "
                            "`iqabench train acpo` (or one of its checkpoint-N folders)")
        info_file = self.folder / "lora.json"
        try:
            info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise SpecError(f"acpo: {info_file} is not valid JSON ({exc}); restore it or pass [base=...]") from exc
        if not isinstance(info, dict):
            raise SpecError(f"acpo: {info_file} should hold a JSON object (rank, alpha, targets, base)")
        own, _ = self.split_options(spec)
        base = own.get("base") or info.get("base")
        if not base:
            raise SpecError(f"acpo: {self.folder} does not say which base model it was trained on; add [base=sd14]")
        super().__init__(spec, runtime, base=str(base), where="acpo")
        self._sha256: str | None = None

    def own_fingerprint(self) -> dict[str, Any]:
        """The LoRA file's sha256."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256((self.folder / LORA_FILE).read_bytes()).hexdigest()
        return {"lora_sha256": self._sha256}

    def load_pipeline(self):
        pipe = super().load_pipeline()
        load_lora(pipe.unet, self.folder)
        return pipe


@register_generator("acpo", description="ACPO LoRA fine-tune of a base model: acpo:<folder from train acpo>",
                    weights=lambda: (None, "a LoRA folder you trained, plus its base model's weights (see its row)"),
                    options=AcpoOptions)
def build_acpo(spec: GeneratorSpec, runtime: Runtime) -> AcpoGenerator:
    """Checks the LoRA file and the base spec; loads nothing heavy."""
    return AcpoGenerator(spec, runtime)
