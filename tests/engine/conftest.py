"""Fixtures of the engine tests."""

import pytest


@pytest.fixture(scope="session")
def learn_folder(tmp_path_factory):
    """240 synthetic radiographs at 64 px: enough for the small recipe of
    ``synthetic_runs.synthetic_recipe`` to learn bone age."""
    from boneage.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("learn") / "set", 240, size=64, seed=11)
