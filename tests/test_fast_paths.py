"""Opt-in fast paths give the default path's images within the stated tolerance (tiny models, float32).

Tolerance (see iqabench/execution/fast_paths.py): every pixel within 2 of 255 levels, mean difference under 0.1 level.
torch.compile is checked with the ``aot_eager`` backend (the same graph capture and functionalisation as
inductor, without the C++ build, which takes minutes on a 2-core CI machine: inductor itself gave at most 1
level, mean 1e-4, on both tiny models when checked by hand, in 168 s and 141 s); real runs use inductor.
"""

import functools

import pytest
import torch

from iqabench.execution.fast_paths import FastPaths, apply_fast_paths, sdpa_backend
from iqabench.execution.image_tensors import quantize
from iqabench.support.tiny_models import tiny_sd_pipeline, tiny_sdxl_pipeline

MAX_LEVELS, MEAN_LEVELS = 2, 0.1


def _images(pipe, backend="auto"):
    pipe.set_progress_bar_config(disable=True)
    with sdpa_backend(backend):
        out = pipe(prompt=["a red cube", "a cat"], generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                   num_inference_steps=2, height=64, width=64, output_type="pt")
    return quantize(out.images).int()


@functools.cache
def _reference(build):
    return _images(build(0))


_EACH = [(FastPaths(channels_last=True), "auto"), (FastPaths(fuse_qkv=True), "auto"),
         (FastPaths(sdpa_backend="math"), "math")]
CASES = (
    [(tiny_sd_pipeline, paths, backend) for paths, backend in _EACH]
    # compiling is slow on CPU: compile alone on tiny-sd; tiny-sdxl runs every path at once
    + [(tiny_sd_pipeline, FastPaths(compile=True, compile_backend="aot_eager"), "auto"),
       (tiny_sdxl_pipeline, FastPaths(compile=True, channels_last=True, fuse_qkv=True, sdpa_backend="math",
                                       compile_backend="eager"), "math")]
)


def _case_id(build, paths):
    on = [k for k, v in paths.describe().items() if v and v != "auto"]
    return f"{build.__name__.split('_')[1]}-{'+'.join(on)}"


@pytest.mark.parametrize("build,paths,backend", CASES, ids=[_case_id(b, p) for b, p, _ in CASES])
def test_fast_path_matches_default_within_tolerance(build, paths, backend):
    reference = _reference(build)
    torch._dynamo.reset()
    pipe = apply_fast_paths(build(0), paths)
    got = _images(pipe, backend)
    diff = (got - reference).abs()
    assert diff.max().item() <= MAX_LEVELS and diff.float().mean().item() < MEAN_LEVELS
    if paths.fuse_qkv:
        from diffusers.models.attention_processor import FusedAttnProcessor2_0

        assert all(isinstance(p, FusedAttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    if paths.channels_last:
        weight = next(m.weight for m in pipe.unet.modules() if isinstance(m, torch.nn.Conv2d))
        assert weight.is_contiguous(memory_format=torch.channels_last)
    if paths.compile:
        assert hasattr(pipe.unet, "_compiled_call_impl") and pipe.unet._compiled_call_impl is not None


def test_fuse_qkv_refuses_custom_attention_processors():
    pipe = tiny_sd_pipeline(0)

    class Custom:
        def __call__(self, attn, hidden_states, *args, **kwargs):  # pragma: no cover - never called
            raise AssertionError

    pipe.unet.set_attn_processor(Custom())
    with pytest.raises(ValueError, match="without --fuse-qkv"):
        apply_fast_paths(pipe, FastPaths(fuse_qkv=True))


def test_unknown_sdpa_backend_is_one_clear_sentence():
    with pytest.raises(ValueError, match="choose one of auto, flash"):
        FastPaths(sdpa_backend="fastest")


def test_generators_apply_the_runtime_fast_paths():
    from iqabench.contracts.generators import WorkItem, build_generator
    from iqabench.execution.runtime import Runtime

    items = [WorkItem("p", "a red cube", 0)]
    default = build_generator("tiny-sd[steps=2]", Runtime("cpu", "fp32", batch_size=1))
    fast = build_generator("tiny-sd[steps=2]", Runtime("cpu", "fp32", batch_size=1, channels_last=True,
                                                       fuse_qkv=True, sdpa_backend="math"))
    assert fast.fingerprint() == default.fingerprint()  # same cache keys: the paths change rounding only
    diff = (fast.generate_tensors(items)[0].int() - default.generate_tensors(items)[0].int()).abs()
    assert diff.max().item() <= MAX_LEVELS and diff.float().mean().item() < MEAN_LEVELS
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    assert all(isinstance(p, FusedAttnProcessor2_0) for p in fast.pipeline.unet.attn_processors.values())
