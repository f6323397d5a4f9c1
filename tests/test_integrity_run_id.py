"""Issue 26, item 2: a run id is bound to its spec. A different spec under a finished run's --run-id is refused
(naming the differing fields) unless --overwrite; two processes racing for one run id: one wins, the other is
refused; nothing is replaced silently."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from iqabench.api import run
from iqabench.contracts.specs import RunSpec

SPEC = dict(benchmark="scores", generators=["tiny-sd[steps=1]"], metrics=["entropy"], prompts="smoke", limit=1,
            seeds=[0], batch_size=2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    assert run(RunSpec(**SPEC), out=root, run_id="mine", report=False).complete
    return root


def test_spec_differences_names_fields_and_ignores_speed_settings():
    from iqabench.engine.run_binding import spec_differences

    a = RunSpec(**SPEC).to_dict()
    assert spec_differences(a, {**a, "batch_size": 8, "options": {"compile": True}}) == []
    assert spec_differences(a, {**a, "seeds": [1], "options": {"scales": [1, 2]}}) == ["options.scales", "seeds"]


def test_another_spec_under_a_used_run_id_is_refused_and_the_run_is_kept(finished):
    from iqabench.engine.run_binding import RunIdInUseError

    before = (finished / "runs" / "mine" / "run.json").read_bytes()
    with pytest.raises(RunIdInUseError, match=r"run id 'mine' already holds a run of another spec \(differing: "
                                              r"generators, seeds\).*--overwrite"):
        run(RunSpec(**{**SPEC, "seeds": [1], "generators": ["tiny-sd[steps=2]"]}), out=finished, run_id="mine")
    assert (finished / "runs" / "mine" / "run.json").read_bytes() == before


def test_the_same_spec_resumes_and_a_new_batch_size_is_not_a_difference(finished):
    assert run(RunSpec(**{**SPEC, "batch_size": 1}), out=finished, run_id="mine", report=False).complete


def test_overwrite_lets_another_spec_replace_the_run(finished, tmp_path):
    import shutil

    shutil.copytree(finished, tmp_path / "s")
    run(RunSpec(**{**SPEC, "seeds": [1]}), out=tmp_path / "s", run_id="mine", overwrite=True, report=False)
    assert json.loads((tmp_path / "s" / "runs" / "mine" / "run.json").read_text())["spec"]["seeds"] == [1]


def test_cli_refusal_is_one_sentence_exit_2(finished, tmp_path):
    from typer.testing import CliRunner

    from iqabench.cli import app

    result = CliRunner().invoke(app, ["run", "scores", "-g", "tiny-sd[steps=1]", "--metrics", "entropy", "--limit",
                                      "1", "--seeds", "3", "--run-id", "mine", "--out", str(finished)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "differing: seeds" in " ".join(result.output.split())


def test_a_second_process_claiming_a_run_id_in_use_is_refused(tmp_path):
    """The lock is held across processes: a child tries the run id this process holds and is refused."""
    from iqabench.engine.run_binding import claim_run

    folder = tmp_path / "runs" / "race"
    claim = claim_run(folder, RunSpec(**SPEC).to_dict())
    try:
        child = textwrap.dedent(f'''
            from pathlib import Path
            from iqabench.engine.run_binding import RunIdInUseError, claim_run
            try:
                claim_run(Path({str(folder)!r}), {{"benchmark": "scores"}})
            except RunIdInUseError as exc:
                print("REFUSED", exc)
        ''')
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60,
                             env=os.environ).stdout
        assert out.startswith("REFUSED") and f"pid {os.getpid()}" in out
    finally:
        claim.release()
    claim_run(folder, RunSpec(**SPEC).to_dict()).release()  # free again once released


def test_two_runs_started_at_once_under_one_id_one_wins(tmp_path):
    """Two different specs started at the same moment with one --run-id: exactly one exits 0, the other exits 2
    with the refusal; run.json holds the winner's spec."""
    base = [sys.executable, "-m", "iqabench", "run", "scores", "-g", "tiny-sd[steps=1]", "--metrics", "entropy",
            "--limit", "1", "--run-id", "race", "--out", str(tmp_path / "s")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*base, "--seeds", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) for seed in (0, 1)]
    results = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(text for code, text in results if code == 2)
    assert "run id 'race'" in loser and "Traceback" not in loser
    winner_seed = [0, 1][[code for code, _ in results].index(0)]
    assert json.loads((tmp_path / "s" / "runs" / "race" / "run.json").read_text())["spec"]["seeds"] == [winner_seed]
