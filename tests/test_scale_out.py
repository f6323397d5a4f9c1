"""Several processes on one Store (torchrun, gloo on CPU), a killed worker, and out-of-memory back-off."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from oom_plugin import write_small_card_plugin
from PIL import Image

from iqabench.api import run
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner
from iqabench.execution.oom import is_out_of_memory
from iqabench.store.store import Store

ARGS = ["relgain", "--generator", "tiny-sd", "--metrics", "piqe,entropy", "--limit", "3", "--seeds", "0-1",
        "--batch-size", "2"]
N_IMAGES = 12  # 3 prompts x 2 seeds x (generator + baseline)


def _torchrun(out, extra_env=None, **kwargs):
    # --standalone: torchrun picks a free local port, so two test workers (pytest-xdist) or another job on the
    # machine never meet on one (a pid-derived port could)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "iqabench", "run", *ARGS, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _pixels(root):
    return {p.name: np.asarray(Image.open(p)) for p in (root / "cache" / "images").rglob("*.png")}


@pytest.fixture(scope="module")
def single_process_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    spec = RunSpec("relgain", ["tiny-sd"], metrics=["piqe", "entropy"], limit=3, seeds=[0, 1], batch_size=2)
    run(spec, out=out, report=False)
    return out


def test_two_processes_write_every_item_once_and_match_one_process(tmp_path, single_process_store):
    proc = _torchrun(tmp_path)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    two, one = _pixels(tmp_path), _pixels(single_process_store)
    assert len(two) == N_IMAGES and set(two) == set(one)
    for name in one:
        assert np.array_equal(two[name], one[name]), name
    store = Store(tmp_path)
    assert store.count_scores() == 2 * N_IMAGES
    rows = store._connection().execute("SELECT COUNT(*), COUNT(DISTINCT image_key || metric) FROM scores").fetchone()
    assert rows[0] == rows[1]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "report.html").is_file()  # analysed and reported once, by process 0
    # Each process wrote its rows to its own SQLite shard; process 0 merged them and removed the shards.
    assert not list((tmp_path / "cache" / "score-shards").rglob("*.sqlite"))
    assert output.count("report:") == 1


def test_a_killed_worker_leaves_a_resumable_shard(tmp_path, single_process_store):
    proc = _torchrun(tmp_path, start_new_session=True)
    images = tmp_path / "cache" / "images"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(images.rglob("*.png")) if images.exists() else []) < 2:
        time.sleep(0.05)
    # Kill one worker (the newest python child of the launcher), as an OOM killer or a node failure would.
    workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert workers, "torchrun should have started worker processes"
    os.kill(int(workers[-1]), signal.SIGKILL)
    proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert len(list(images.rglob("*.png"))) < N_IMAGES
    again = _torchrun(tmp_path)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    resumed, reference = _pixels(tmp_path), _pixels(single_process_store)
    assert set(resumed) == set(reference)
    assert all(np.array_equal(resumed[k], reference[k]) for k in reference)
    assert Store(tmp_path).count_scores() == 2 * N_IMAGES
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_out_of_memory_halves_the_batch_and_gives_the_same_images(tmp_path, single_process_store):
    plugin = write_small_card_plugin(tmp_path / "small_gpu.py", "small-memory-test", steps=4)
    messages = []
    spec = RunSpec("scores", ["small-memory-test"], metrics=["piqe"], limit=3, seeds=[0, 1], batch_size=8,
                   plugins=[str(plugin)])
    runner = Runner(spec, tmp_path / "out", log=messages.append)
    outcome = runner.execute()
    assert runner.runtime.batch_size == 2
    assert any("out of memory with 6 images per batch; retrying with 4" in m for m in messages)
    assert not outcome.failures
    # Same fingerprint as tiny-sd, so the same keys; the pixels equal an unconstrained run at the batch size the
    # back-off settled on. (On CPU, oneDNN picks convolution kernels by batch size, so runs at *different*
    # batch sizes can differ by one 8-bit level in a few pixels; see docs/scaling.md.)
    constrained = _pixels(tmp_path / "out")
    assert len(constrained) == 6
    assert all(np.array_equal(v, _pixels(single_process_store)[k]) for k, v in constrained.items())


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: out of memory"))
    assert not is_out_of_memory(ValueError("bad prompt"))


def test_out_of_memory_while_isolating_a_failed_batch_retries_the_item_instead_of_skipping_it(tmp_path):
    """A batch fails (not OOM), so items are retried one by one; one of those single calls then runs out of
    memory. The back-off must retry that item, not count it as handled with no image and no failure row."""
    plugin = tmp_path / "moody.py"
    plugin.write_text(textwrap.dedent('''
        import torch
        from iqabench.contracts.generators import register_generator
        from iqabench.adapters.diffusers_base import DiffusersGenerator
        from iqabench.support.tiny_models import tiny_sd_pipeline

        class Moody(DiffusersGenerator):
            calls = 0

            def generate(self, items):
                Moody.calls += 1
                if Moody.calls == 1:
                    raise RuntimeError("transient driver hiccup")
                if Moody.calls == 2:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
                return super().generate(items)

        @register_generator("moody-test", overwrite=True)
        def build(spec, runtime):
            return Moody(spec, runtime, source="tiny-sd", defaults={"guidance_scale": 1.0, "steps": 4},
                         tiny_builder=tiny_sd_pipeline)
    '''))
    spec = RunSpec("scores", ["moody-test"], metrics=["piqe"], limit=2, seeds=[0], batch_size=2,
                   plugins=[str(plugin)])
    runner = Runner(spec, tmp_path / "out")
    outcome = runner.execute()
    assert runner.runtime.batch_size == 1
    assert not outcome.failures
    assert len(_pixels(tmp_path / "out")) == 2  # before the fix one image was silently left out


def test_num_processes_shortcut_relaunches_the_command_on_n_processes(tmp_path):
    """`iqabench run ... --num-processes 2` re-runs itself under a launcher: each worker sees its rank."""
    plugin = tmp_path / "rank_probe.py"
    plugin.write_text(textwrap.dedent(f'''
        import os
        from pathlib import Path

        Path({str(tmp_path)!r}, "rank-" + os.environ.get("RANK", "none") + "-of-" + os.environ.get("WORLD_SIZE", "1")
             ).touch()
    '''))
    cmd = [sys.executable, "-m", "iqabench", "run", *ARGS, "--dry-run", "--num-processes", "2", "--plugin",
           str(plugin), "--out", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("rank-*")) == ["rank-0-of-2", "rank-1-of-2"]
    assert done.stderr.count("unique images") == 1  # the plan is printed once, by process 0
