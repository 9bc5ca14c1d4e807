"""Shared fixtures: one synthetic NTU-format dataset and one Prefect test server per session."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

pytest_plugins = ["conftest_model"]  # the model-layer fixtures (tiny Mochi, text features)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tiny models are dispatch-bound: one torch thread is faster and steadier on 2 cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic NTU RGB+D folder with one faulty clip of each kind per relation."""
    from dreamrelation.data.synthetic import SyntheticConfig, generate_dataset

    config = SyntheticConfig(
        relations=["A058", "A055", "A112"],
        clips_per_relation=5,
        frames=40,
        seed=3,
        missing_skeleton=1,
        single_body=1,
        short=1,
    )
    root = tmp_path_factory.mktemp("ntu")
    generate_dataset(root, config)
    return root


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One ephemeral Prefect server for every flow test (starting one costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
