"""What an operator's feedback is made of: candidates, pairwise comparisons and ratings of one step.

Plain, validated values (``RecordError``, a ``ValueError``, says which field is wrong and why), so a bad
record is refused before it reaches the database. Traces are in the model's space (integers 0..255 on the
first camera image, 1..5 waypoints, the grammar's own bounds); actions are the first (executed) action of
the chunk, un-normalized, every value finite.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from model.grammar import MAX_COORD                           # 255: the model's trace space
from model.tokenizer import NUM_DEPTH_CODES                   # the depth codebook size

MODES = ("reason", "steer_visual", "steer_text")              # model.reasoning.MODES (that module loads torch)
KINDS = ("model_vs_edit", "two_samples", "two_checkpoints", "two_modes")
ANSWERS = ("A", "B", "tie", "both_bad")
SCORE_RANGE = (1, 5)
MAX_POINTS = 5                                                 # model.grammar.AnswerFormat.max_points bound

Point = tuple[int, int]


class RecordError(ValueError):
    """A feedback record that cannot be stored; the message names the field."""


# ------------------------------------------------------------------------------------------- checks

def _text(name: str, value: Any, *, required: bool) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{name} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RecordError(f"{name} is empty")
    return value


def _opt_text(name: str, value: Any) -> str | None:
    return None if value is None else _text(name, value, required=True)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise RecordError(f"{name} must be an integer, got {value!r}")
    f = float(value)
    if not math.isfinite(f) or not f.is_integer():
        raise RecordError(f"{name} must be an integer, got {value!r}")
    return int(f)


def _opt_index(name: str, value: Any) -> int | None:
    if value is None:
        return None
    i = _integer(name, value)
    if i < 0:
        raise RecordError(f"{name} must be >= 0, got {i}")
    return i


def check_trace(trace: Iterable[Sequence[Any]], name: str = "trace") -> tuple[Point, ...]:
    """1..5 integer points in 0..255 (model space). Nothing is clamped: a bad point is an error."""
    if isinstance(trace, np.ndarray):
        trace = trace.tolist()
    try:
        pts = [tuple(p) for p in trace]
    except TypeError:
        raise RecordError(f"{name} must be a list of (x, y) points") from None
    if not pts:
        raise RecordError(f"{name} has no points")
    if len(pts) > MAX_POINTS:
        raise RecordError(f"{name} has {len(pts)} points; at most {MAX_POINTS} are allowed")
    out = []
    for i, p in enumerate(pts):
        if len(p) != 2:
            raise RecordError(f"{name} point {i} has {len(p)} coordinates, expected 2")
        x, y = (_integer(f"{name} point {i}", v) for v in p)
        if not (0 <= x <= MAX_COORD and 0 <= y <= MAX_COORD):
            raise RecordError(f"{name} point {i} ({x}, {y}) is outside the model space 0..{MAX_COORD}")
        out.append((x, y))
    return tuple(out)


def check_vector(values: Any, name: str) -> tuple[float, ...]:
    """A non-empty 1-D list of finite numbers."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RecordError(f"{name} must be a list of numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise RecordError(f"{name} must be a non-empty 1-D list of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise RecordError(f"{name}[{bad}] is not finite ({arr[bad]})")
    return tuple(float(v) for v in arr)


def _opt_vector(values: Any, name: str) -> tuple[float, ...] | None:
    return None if values is None else check_vector(values, name)


def check_image(image: Any, name: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise RecordError(f"{name} must be an HxWx3 uint8 RGB array, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise RecordError(f"{name} is empty ({image.shape[1]}x{image.shape[0]})")
    return image


def _timestamp(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise RecordError(f"created_at must be seconds since the epoch, got {value!r}")
    f = float(value)
    if not math.isfinite(f) or f < 0:
        raise RecordError(f"created_at must be finite and >= 0, got {value!r}")
    return f


def _score(name: str, value: Any) -> int | None:
    if value is None:
        return None
    lo, hi = SCORE_RANGE
    try:
        s = _integer(name, value)
    except RecordError:
        raise RecordError(f"{name} must be an integer {lo}..{hi}, got {value!r}") from None
    if not lo <= s <= hi:
        raise RecordError(f"{name} must be {lo}..{hi}, got {s}")
    return s


def _images_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


# ------------------------------------------------------------------------------------------ records

@dataclass(frozen=True)
class Candidate:
    """One proposal the operator judges: a trace and the action decoded with it.

    ``label`` names what produced it and is what the leaderboard ranks: ``"model"``, ``"operator_edit"``,
    ``"steer_text"``, ``"steer_visual"``, ``"checkpoint:NAME"``, ``"sample:1"``… ``action`` is the first
    action of the chunk, un-normalized; ``action_normalized`` its [-1, 1] form; ``sent`` what the arm got
    after the safety guard (arm frame and units), when it was sent; ``depth_codes`` the 100 depth tokens.
    """
    label: str
    model_id: str
    mode: str
    trace: tuple[Point, ...]
    action: tuple[float, ...]
    action_normalized: tuple[float, ...] | None = None
    sent: tuple[float, ...] | None = None
    depth_codes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _text("candidate label", self.label, required=True)
        _text("candidate model_id", self.model_id, required=True)
        if self.mode not in MODES:
            raise RecordError(f"candidate mode {self.mode!r} is not one of {', '.join(MODES)}")
        set_ = object.__setattr__
        set_(self, "trace", check_trace(self.trace, f"candidate {self.label!r} trace"))
        set_(self, "action", check_vector(self.action, f"candidate {self.label!r} action"))
        an = _opt_vector(self.action_normalized, f"candidate {self.label!r} action_normalized")
        if an is not None and len(an) != len(self.action):
            raise RecordError(f"candidate {self.label!r}: action_normalized has {len(an)} values, "
                              f"action has {len(self.action)}")
        set_(self, "action_normalized", an)
        set_(self, "sent", _opt_vector(self.sent, f"candidate {self.label!r} sent"))
        if self.depth_codes is not None:
            codes = tuple(_integer("depth code", c) for c in np.asarray(self.depth_codes).ravel().tolist())
            bad = [c for c in codes if not 0 <= c < NUM_DEPTH_CODES]
            if bad:
                raise RecordError(f"candidate {self.label!r}: depth code {bad[0]} is outside 0..{NUM_DEPTH_CODES - 1}")
            set_(self, "depth_codes", codes)

    @classmethod
    def from_reasoning(cls, reasoning: Any, *, label: str, model_id: str,
                       trace: Sequence[Sequence[int]] | None = None, sent: Any = None) -> "Candidate":
        """From a ``model.reasoning.Reasoning`` (duck-typed). ``trace`` overrides the reasoning's own
        (``steer_visual`` answers carry none: pass the operator's edited trace)."""
        actions = np.asarray(reasoning.actions, dtype=np.float64)
        normalized = np.asarray(reasoning.actions_normalized, dtype=np.float64)
        return cls(label=label, model_id=model_id, mode=reasoning.mode,
                   trace=tuple(trace if trace is not None else reasoning.trace),
                   action=actions.reshape(-1, actions.shape[-1])[0],
                   action_normalized=normalized.reshape(-1, normalized.shape[-1])[0] if normalized.size else None,
                   sent=sent, depth_codes=tuple(reasoning.depth_codes) or None)

    @classmethod
    def from_step(cls, step: Any, *, label: str, model_id: str, depth_codes: Sequence[int] | None = None
                  ) -> "Candidate":
        """From an ``app.session.ActionStep`` (duck-typed): its trace, action and what was sent."""
        return cls(label=label, model_id=model_id, mode=step.mode, trace=tuple(step.trace), action=step.action,
                   action_normalized=getattr(step, "action_normalized", None), sent=getattr(step, "sent", None),
                   depth_codes=depth_codes)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "model_id": self.model_id, "mode": self.mode,
                "trace": [list(p) for p in self.trace], "action": list(self.action),
                "action_normalized": None if self.action_normalized is None else list(self.action_normalized),
                "sent": None if self.sent is None else list(self.sent),
                "depth_codes": None if self.depth_codes is None else list(self.depth_codes)}


@dataclass(eq=False)
class Comparison:
    """Two candidates for one observation, shown side by side on the same image, and the operator's answer.

    ``kind``: what was compared (``model_vs_edit``, ``two_samples``, ``two_checkpoints``, ``two_modes``).
    ``answer``: ``A``, ``B``, ``tie`` or ``both_bad``. ``model_id``: the station's model when the answer was
    given (each candidate names its own). ``recording``/``episode_index``/``frame_index`` link the answer to
    a recorded episode (LeRobot layout) when one was being recorded. ``id`` is set by the store.
    """
    image: np.ndarray
    instruction: str
    model_id: str
    unnorm_key: str | None
    kind: str
    a: Candidate
    b: Candidate
    answer: str
    operator: str
    comment: str = ""
    created_at: float = field(default_factory=time.time)
    recording: str | None = None
    episode_index: int | None = None
    frame_index: int | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        self.image = check_image(self.image)
        _text("instruction", self.instruction, required=True)
        _text("model_id", self.model_id, required=True)
        self.unnorm_key = _opt_text("unnorm_key", self.unnorm_key)
        if self.kind not in KINDS:
            raise RecordError(f"comparison kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for side in ("a", "b"):
            if not isinstance(getattr(self, side), Candidate):
                raise RecordError(f"candidate {side.upper()} must be a Candidate")
        if self.answer not in ANSWERS:
            raise RecordError(f"answer {self.answer!r} is not one of {', '.join(ANSWERS)}")
        _text("operator", self.operator, required=True)
        _text("comment", self.comment, required=False)
        self.created_at = _timestamp(self.created_at)
        self.recording = _opt_text("recording", self.recording)
        self.episode_index = _opt_index("episode_index", self.episode_index)
        self.frame_index = _opt_index("frame_index", self.frame_index)

    @property
    def chosen(self) -> Candidate | None:
        """The preferred candidate, or None for a tie or both bad."""
        return {"A": self.a, "B": self.b}.get(self.answer)

    @property
    def rejected(self) -> Candidate | None:
        return {"A": self.b, "B": self.a}.get(self.answer)

    def _key(self) -> tuple:
        return (self.instruction, self.model_id, self.unnorm_key, self.kind, self.a, self.b, self.answer,
                self.operator, self.comment, self.created_at, self.recording, self.episode_index, self.frame_index)

    def __eq__(self, other: object) -> bool:
        """Equal content (the store's ``id`` is not compared)."""
        if not isinstance(other, Comparison):
            return NotImplemented
        return self._key() == other._key() and _images_equal(self.image, other.image)


@dataclass(eq=False)
class Rating:
    """One reasoning step rated on its own: depth, trace and action each 1..5 (None: not rated; at least
    one score or a note is needed), and a free-text note."""
    image: np.ndarray
    instruction: str
    unnorm_key: str | None
    candidate: Candidate
    operator: str
    depth_score: int | None = None
    trace_score: int | None = None
    action_score: int | None = None
    note: str = ""
    created_at: float = field(default_factory=time.time)
    recording: str | None = None
    episode_index: int | None = None
    frame_index: int | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        self.image = check_image(self.image)
        _text("instruction", self.instruction, required=True)
        self.unnorm_key = _opt_text("unnorm_key", self.unnorm_key)
        if not isinstance(self.candidate, Candidate):
            raise RecordError("the rated step must be a Candidate")
        _text("operator", self.operator, required=True)
        self.depth_score = _score("depth score", self.depth_score)
        self.trace_score = _score("trace score", self.trace_score)
        self.action_score = _score("action score", self.action_score)
        _text("note", self.note, required=False)
        if self.depth_score is None and self.trace_score is None and self.action_score is None \
                and not self.note.strip():
            raise RecordError("a rating needs at least one score (depth, trace or action, 1..5) or a note")
        self.created_at = _timestamp(self.created_at)
        self.recording = _opt_text("recording", self.recording)
        self.episode_index = _opt_index("episode_index", self.episode_index)
        self.frame_index = _opt_index("frame_index", self.frame_index)

    @property
    def model_id(self) -> str:
        return self.candidate.model_id

    @property
    def mode(self) -> str:
        return self.candidate.mode

    def _key(self) -> tuple:
        return (self.instruction, self.unnorm_key, self.candidate, self.operator, self.depth_score,
                self.trace_score, self.action_score, self.note, self.created_at, self.recording,
                self.episode_index, self.frame_index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rating):
            return NotImplemented
        return self._key() == other._key() and _images_equal(self.image, other.image)


@dataclass(frozen=True)
class Outcome:
    """A comparison reduced to what a leaderboard needs (no image)."""
    a: str
    b: str
    answer: str
    kind: str = "model_vs_edit"

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise RecordError(f"answer {self.answer!r} is not one of {', '.join(ANSWERS)}")

    @classmethod
    def of(cls, c: Comparison) -> "Outcome":
        return cls(c.a.label, c.b.label, c.answer, c.kind)


__all__ = ["ANSWERS", "KINDS", "MODES", "Candidate", "Comparison", "Outcome", "Rating", "RecordError",
           "check_image", "check_trace", "check_vector"]
