import os

import pytest
import torch

# Tiny models are faster on one thread, and the suite's subprocess tests then do not fight the main process.
torch.set_num_threads(1)

# No network anywhere in the suite: fail fast instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("IQABENCH_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the CLI subprocesses the tests start

# pytest-xdist starts its workers with COLUMNS=80 and LINES=24 in the environment. A rich Console made while
# COLUMNS is set keeps that width for good (iqabench.cli.common makes its consoles at import), so the CLI tests that
# pass their own width (CliRunner(env={"COLUMNS": "200"})) would print at 80 columns under `-n 2` only. Without
# them, as in a one-process run, each console reads the width when it prints.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture
def store(tmp_path):
    from iqabench.store.store import Store

    s = Store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture(scope="session")
def hub_mirror(tmp_path_factory):
    """The test hub mirror (tests/hub_mirror), one per session; call ``hub_mirror.ensure(part, ...)`` for its parts."""
    from hub_mirror import build_mirror

    return build_mirror(tmp_path_factory.mktemp("hub-mirror"))
