"""Shared test set-up: quiet, single-threaded numerics (2-core machines), shared data paths."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from crosearch_agent.config import data_dir, models_home  # noqa: E402

# Tests that point CROSEARCH_HOME at a temporary folder still share the one materialised copy
# of the bundled weights (re-materialising the policy costs about a minute).
os.environ.setdefault("CROSEARCH_MODELS", str(models_home()))


def pytest_configure(config):
    import faiss

    faiss.omp_set_num_threads(1)  # 2 threads under load measured 10-30x slower here
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data():
    root = data_dir()
    if root is None or not (root / "xquad").is_dir():
        pytest.skip("the shared data sets (../shared/data) are not present")
    return root
