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


@pytest.fixture
def store(tmp_path):
    from iqabench.store import Store

    s = Store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture(scope="session")
def hub_mirror(tmp_path_factory):
    """The test hub mirror (tests/hub_mirror), one per session; call ``hub_mirror.ensure(part, ...)`` for its parts."""
    from hub_mirror import build_mirror

    return build_mirror(tmp_path_factory.mktemp("hub-mirror"))
