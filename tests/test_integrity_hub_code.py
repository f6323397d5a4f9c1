"""Issue 26, item 3: no code from a cache runs unless the user opts in (``--trust-hub-code``).

A ``hubconf.py`` planted in torch hub's cache ran when ``fid_dinov2`` was built (pyiqa calls ``torch.hub.load``).
The planted file here writes a marker file when imported: it must never run by default, and runs only with the
opt-in."""

import textwrap

import pytest
import torch

from iqabench.metrics import MetricUnavailableError, build_metric, check_available

HUBCONF = textwrap.dedent('''
    from pathlib import Path
    import torch

    Path(__file__).with_name("RAN").write_text("planted hubconf.py ran")

    def dinov2_vitl14(**kwargs):
        return torch.nn.Identity()
''')


@pytest.fixture
def planted(tmp_path, monkeypatch):
    repo = tmp_path / "torch" / "hub" / "facebookresearch_dinov2_main"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return repo / "RAN"


def test_planted_hubconf_never_runs_by_default(planted):
    with pytest.raises(MetricUnavailableError, match="--trust-hub-code"):
        check_available("fid_dinov2")
    with pytest.raises(MetricUnavailableError, match="runs code from a cache.*--trust-hub-code"):
        build_metric("fid_dinov2")
    assert not planted.exists()


def test_torch_hub_load_is_refused_for_any_caller_without_the_opt_in(planted):
    """Not only the metrics in the table: once iqabench has built anything, a plugin's torch.hub.load is refused."""
    from iqabench.io import hub_code, safe_load
    from iqabench.io.hub_code import UntrustedCodeError

    safe_load.install()
    with pytest.raises(UntrustedCodeError, match="hubconf.py.*--trust-hub-code"):
        torch.hub.load("facebookresearch/dinov2:main", "dinov2_vitl14", trust_repo=True, skip_validation=True)
    assert not planted.exists()
    with hub_code.trusted(True):
        torch.hub.load("facebookresearch/dinov2:main", "dinov2_vitl14", trust_repo=True, skip_validation=True)
    assert planted.exists()


def test_planted_hubconf_runs_only_with_the_opt_in(planted):
    check_available("fid_dinov2", trust_hub_code=True)
    assert not planted.exists()
    build_metric("fid_dinov2", trust_hub_code=True)
    assert planted.read_text() == "planted hubconf.py ran"


def test_run_refuses_a_code_loading_metric_before_any_work(planted, tmp_path):
    from iqabench.api import run
    from iqabench.contracts.specs import RunSpec

    spec = RunSpec("scores", ["tiny-sd[steps=1]"], metrics=["fid_dinov2"], limit=1)
    with pytest.raises(MetricUnavailableError, match="--trust-hub-code"):
        run(spec, out=tmp_path / "out")
    assert not planted.exists() and not list((tmp_path / "out" / "cache" / "images").glob("*/*.png"))


def test_list_metrics_marks_code_loading_metrics():
    from typer.testing import CliRunner

    from iqabench.cli import app

    result = CliRunner().invoke(app, ["list", "metrics"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if " fid_dinov2 " in f" {line} ")
    assert "runs cached code: needs --trust-hub-code" in line
    piqe = next(line for line in result.output.splitlines() if " piqe " in f" {line} ")
    assert "cached code" not in piqe
