"""Score while generating: in-memory scores equal decoded-PNG scores, PNGs equal diffusers' PIL output;
--batch-size auto probes (fake out-of-memory) and remembers its choice."""

import textwrap

import numpy as np
import torch
from oom_plugin import write_small_card_plugin
from PIL import Image

from iqabench.contracts.generators import WorkItem, build_generator
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner
from iqabench.execution.image_tensors import pil_to_uint8
from iqabench.execution.runtime import Runtime

SPEC = dict(benchmark="scores", generators=["tiny-sd[steps=2]"], metrics=["piqe", "entropy"], prompts="smoke",
            limit=2, seeds=[0, 1], batch_size=2)


def _all_scores(runner):
    keys = sorted(set(runner.image_keys))
    return {m: runner.store.get_scores(keys, m, fp) for m, fp in runner.metric_fps.items()}


def test_in_memory_scores_equal_the_decode_path_and_the_pngs_are_unchanged(tmp_path):
    in_memory = Runner(RunSpec(**SPEC), tmp_path / "a", score_in_memory=True)
    in_memory.execute()
    decoded = Runner(RunSpec(**SPEC), tmp_path / "b", score_in_memory=False, decode_workers=2)
    decoded.execute()
    # Scored in the generation pass; the scoring stage found nothing left to do.
    assert in_memory.clock.stages["score-in-memory"].calls > 0 and in_memory.clock.stages["score"].calls == 0
    assert "score-in-memory" not in decoded.clock.stages and decoded.clock.stages["score"].calls > 0
    scores_a, scores_b = _all_scores(in_memory), _all_scores(decoded)
    assert all(len(v) == 4 and None not in v.values() for v in scores_a.values())
    assert scores_a == scores_b  # exactly equal, not approximately
    for key in set(in_memory.image_keys):
        assert in_memory.store.image_bytes(key) == decoded.store.image_bytes(key)


def test_tensor_path_gives_the_bytes_of_diffusers_pil_output():
    generator = build_generator("tiny-sd[steps=2]", Runtime("cpu", "fp32", batch_size=1))
    item = WorkItem("p", "a red cube on a table", 3)
    (tensor,) = generator.generate_tensors([item])
    pipe = generator.pipeline
    (pil,) = pipe(prompt=[item.prompt], generator=[torch.Generator("cpu").manual_seed(3)], num_inference_steps=2,
                  guidance_scale=7.5, height=64, width=64, output_type="pil").images
    assert torch.equal(tensor, pil_to_uint8(pil))
    assert np.array_equal(np.asarray(generator.generate([item])[0]), np.asarray(pil))


def test_batch_size_auto_probes_backs_off_on_out_of_memory_and_remembers(tmp_path):
    plugin = write_small_card_plugin(tmp_path / "small_card.py", "small-card-test", steps=2)
    spec = dict(benchmark="scores", generators=["small-card-test"], metrics=["piqe"], prompts="smoke", limit=4,
                seeds=[0, 1], batch_size=1, options={"auto_batch_size": True}, plugins=[str(plugin)])
    messages: list[str] = []
    runner = Runner(RunSpec(**spec), tmp_path / "out", log=messages.append)
    outcome = runner.execute()
    assert not outcome.failures and all(runner.store.has_image(k) for k in runner.image_keys)
    chosen = [m for m in messages if "--batch-size auto chose" in m]
    assert len(chosen) == 1 and "4 ran out of memory" in chosen[0]
    assert runner.runtime.batch_size in (1, 2)
    from iqabench.engine.batch_autotune import recall

    generator = runner.generators["small-card-test"]
    assert recall(runner.store, generator.fingerprint(), "cpu", runner._speed_setup()) == runner.runtime.batch_size
    assert recall(runner.store, generator.fingerprint(), "cpu", {**runner._speed_setup(), "compile": True}) is None
    # The next run on this generator and device starts at the remembered size, without probing.
    again: list[str] = []
    second = Runner(RunSpec(**{**spec, "seeds": [2]}), tmp_path / "out", log=again.append)
    second.execute()
    assert any("measured by an earlier run" in m for m in again) and not any("chose" in m for m in again)
    assert second.runtime.batch_size == runner.runtime.batch_size


def test_plugin_generators_without_tensors_are_scored_in_memory_too(tmp_path):
    plugin = tmp_path / "flat.py"
    plugin.write_text(textwrap.dedent('''
        import numpy as np
        from PIL import Image
        from iqabench.contracts.generators import register_generator

        class Flat:
            def __init__(self, spec, runtime):
                self.name = str(spec)

            def fingerprint(self):
                return {"class": "flat-test/v1"}

            def baseline(self):
                return None

            def generate(self, items):
                ramp = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)  # not constant: a usable image
                return [Image.fromarray(ramp + np.uint8(item.seed)) for item in items]

        register_generator("flat-test", overwrite=True)(Flat)
    '''))
    spec = RunSpec("scores", ["flat-test"], metrics=["entropy"], prompts="smoke", limit=2, seeds=[0, 1],
                   batch_size=2, plugins=[str(plugin)])
    runner = Runner(spec, tmp_path / "out")
    runner.execute()
    scores = _all_scores(runner)["entropy"]
    assert len(scores) == 4 and runner.clock.stages["score"].calls == 0
    key = sorted(set(runner.image_keys))[0]
    assert Image.open(runner.store.image_path(key)).size == (32, 32)
