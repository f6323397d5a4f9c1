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

import hashlib
import json
from pathlib import Path
from typing import Any

from iqabench.generators import build_generator, register_generator
from iqabench.runtime import Runtime
from iqabench.specs import GeneratorSpec, SpecError

from ..diffusers_base import DiffusersGenerator, base_model_spec
from .lora import LORA_FILE, load_lora

ACPO_OPTIONS: dict[str, Any] = {"base": None}


class AcpoGenerator(DiffusersGenerator):
    """:class:`DiffusersGenerator` of the base model whose UNet carries the LoRA from ``acpo:<folder>``."""

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
        own = {k: v for k, v in spec.options if k in ACPO_OPTIONS}
        base = own.get("base") or info.get("base")
        if not base:
            raise SpecError(f"acpo: {self.folder} does not say which base model it was trained on; add [base=sd14]")
        self.base_spec = GeneratorSpec.parse(str(base))
        if self.base_spec.family in ("acpo", "guidance"):
            raise SpecError(f"acpo: the base must be a plain diffusers generator, not {str(self.base_spec)!r}")
        base_options = {k: v for k, v in spec.options if k not in ACPO_OPTIONS}
        base_gen = build_generator(self.base_spec.with_options(**base_options), runtime)
        if not isinstance(base_gen, DiffusersGenerator):
            raise SpecError(f"acpo: base {str(self.base_spec)!r} is not a diffusers pipeline generator")
        super().__init__(spec, runtime, source=base_gen.source, defaults={**base_gen.options, **ACPO_OPTIONS},
                         tiny_builder=base_gen.tiny_builder)
        self._base_gen = base_gen
        self.implied_options = base_gen.implied_options  # a spec built on this one leaves them out too
        self.options["base"] = str(self.base_spec)
        self._sha256: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        """The base model's fingerprint plus the LoRA file's sha256."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256((self.folder / LORA_FILE).read_bytes()).hexdigest()
        fp = dict(self._base_gen.fingerprint())
        fp.update({"class": "acpo/v1", "base": str(self.base_spec), "lora_sha256": self._sha256})
        return fp

    def baseline(self) -> str | None:
        """The base model without the LoRA, same generation options."""
        return base_model_spec(self.base_spec, self.options, self._base_gen.options, ACPO_OPTIONS,
                               self._base_gen.implied_options)

    def load_pipeline(self):
        pipe = self._base_gen.load_pipeline()
        load_lora(pipe.unet, self.folder)
        return pipe


@register_generator("acpo", description="ACPO LoRA fine-tune of a base model: acpo:<folder from train acpo>",
                    weights=lambda: (None, "a LoRA folder you trained, plus its base model's weights (see its row)"))
def build_acpo(spec: GeneratorSpec, runtime: Runtime) -> AcpoGenerator:
    """Checks the LoRA file and the base spec; loads nothing heavy."""
    return AcpoGenerator(spec, runtime)
