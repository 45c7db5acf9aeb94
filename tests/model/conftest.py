import numpy as np
import pytest

from model.checkpoint import load_checkpoint, write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random checkpoint written by our own writer, in the official file layout."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-molmoact", seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    return load_checkpoint(tiny_dir)


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
