"""What goes into the policy and what comes out of it (DESIGN.md: Observation → Reasoning)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .depth import DepthMap

MODES = ("reason", "steer_visual", "steer_text")


@dataclass
class Observation:
    images: Sequence[np.ndarray]   # HxWx3 uint8 RGB, in the checkpoint's camera order (first = trace image)
    instruction: str
    unnorm_key: str | None = None

    def __post_init__(self) -> None:
        if len(self.images) == 0:
            raise ValueError("an observation needs at least one image")
        for i, img in enumerate(self.images):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image {i} must be an HxWx3 uint8 RGB array")
        if not self.instruction or not self.instruction.strip():
            raise ValueError("the instruction is empty")


@dataclass
class Reasoning:
    mode: str                                   # one of MODES
    depth_codes: list[int]                      # 100 codes (empty for steer_visual: the image is new)
    depth_map: DepthMap | None                  # decoded 320x320 relative depth (None without a decoder)
    trace: list[tuple[int, int]]                # model space 0..255, first image
    actions_normalized: np.ndarray              # [horizon, dim] in [-1, 1]
    actions: np.ndarray                         # [horizon, dim] un-normalized (gripper raw)
    action_token_ids: list[int]
    token_ids: list[int]                        # the whole answer, EOS included
    text: str                                   # the answer decoded (depth tokens kept)
    unnorm_key: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    decode_steps: int = 0                       # model calls after the prefill (jump-forward skips the rest)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")

    @property
    def action(self) -> np.ndarray:
        """The first (or only) action of the chunk: what a controller executes next."""
        return self.actions[0]
