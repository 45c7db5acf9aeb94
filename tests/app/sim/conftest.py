"""One simulated cell shared by the sim tests (building one takes ~0.5 s); each test resets it."""
import pytest

from app.sim.cell import SimCell


@pytest.fixture(scope="session")
def cell():
    c = SimCell()
    yield c
    c.close()
