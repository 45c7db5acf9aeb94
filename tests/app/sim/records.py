"""Comparing generated data record by record (the data is deterministic: equal means the same bytes)."""
from __future__ import annotations

import numpy as np


def assert_same_records(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.episode, x.task, x.instruction) == (y.episode, y.task, y.instruction)
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.own_trace, y.own_trace)
        np.testing.assert_array_equal(x.own_action, y.own_action)
