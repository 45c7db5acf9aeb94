"""Small feedback records for the tests (and the SIGKILL writer child)."""
from __future__ import annotations

import numpy as np

from app.feedback.records import Candidate, Comparison, Rating


def image(seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def candidate(label: str = "model", seed: int = 0, mode: str = "reason", **kw) -> Candidate:
    rng = np.random.default_rng(seed)
    fields = dict(label=label, model_id="tiny-molmoact", mode=mode,
                  trace=[(int(x), int(y)) for x, y in rng.integers(0, 256, (3, 2))],
                  action=rng.normal(0, 0.05, 7), action_normalized=rng.uniform(-1, 1, 7))
    fields.update(kw)
    return Candidate(**fields)


def comparison(seed: int = 0, answer: str = "A", kind: str = "model_vs_edit", a: str = "model",
               b: str = "operator_edit", img: np.ndarray | None = None, **kw) -> Comparison:
    fields = dict(image=image(seed) if img is None else img, instruction="pick up the red cube",
                  model_id="tiny-molmoact", unnorm_key="fractal20220817_data", kind=kind,
                  a=candidate(a, seed * 2 + 1), b=candidate(b, seed * 2 + 2, mode="steer_text"), answer=answer,
                  operator="alice", comment="", created_at=1_790_000_000.0 + seed)
    fields.update(kw)
    return Comparison(**fields)


def rating(seed: int = 0, img: np.ndarray | None = None, **kw) -> Rating:
    fields = dict(image=image(seed) if img is None else img, instruction="pick up the red cube",
                  unnorm_key="fractal20220817_data",
                  candidate=candidate("model", seed, depth_codes=list(range(100)), sent=[0.1] * 7),
                  operator="bob", depth_score=4, trace_score=2, action_score=5, note="the trace misses the cube",
                  created_at=1_790_000_100.0 + seed)
    fields.update(kw)
    return Rating(**fields)
