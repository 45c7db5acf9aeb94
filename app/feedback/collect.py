"""What the operator is asked to judge, taken from the session, and a writer thread for the store.

The window shows the proposal; the answer becomes a ``Comparison`` here (no Qt), and the write
(PNG encode + fsync, 20-30 ms) runs on the writer's thread so the UI never waits on the disk.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from app.feedback.leaderboard import Leaderboard, leaderboard
from app.feedback.records import Candidate, Comparison, Rating
from app.feedback.store import PreferenceStore, StoreError


class NothingToJudge(ValueError):
    """The session has nothing of the asked kind yet (no step, no edit): the message says what to do."""


@dataclass(frozen=True)
class PairProposal:
    """Two candidates on the same image, before the operator's answer (kind as in ``Comparison``)."""
    image: np.ndarray
    instruction: str
    model_id: str
    unnorm_key: str | None
    kind: str
    a: Candidate
    b: Candidate


def propose_model_vs_edit(session, model_id: str) -> PairProposal:
    r, s, frame = session.reasoning, session.steered, getattr(session, "_obs_frame", None) or session.frame
    if r is None or frame is None:
        raise NothingToJudge("nothing to compare yet: press Step")
    if s is None:
        raise NothingToJudge("drag a waypoint first: the comparison is the model's trace against your edit")
    edit = session.edited_trace or list(s.trace)
    a = Candidate.from_reasoning(r, label="model", model_id=model_id)
    b = Candidate.from_reasoning(s, label="operator_edit", model_id=model_id, trace=edit)
    return PairProposal(frame.rgb, session.instruction, model_id, r.unnorm_key, "model_vs_edit", a, b)


def propose_two_modes(session, event, model_id: str) -> PairProposal:
    """A = steer_text, B = steer_visual, the same trace on the same frame (a ``ModesEvent``)."""
    frame = getattr(session, "_obs_frame", None) or session.frame
    r = session.reasoning
    if frame is None or r is None:
        raise NothingToJudge("nothing to compare yet: press Step")
    a = Candidate.from_reasoning(event.text, label="steer_text", model_id=model_id, trace=event.trace)
    b = Candidate.from_reasoning(event.visual, label="steer_visual", model_id=model_id, trace=event.trace)
    return PairProposal(frame.rgb, session.instruction, model_id, r.unnorm_key, "two_modes", a, b)


def rating_subject(session, model_id: str) -> tuple[np.ndarray, str, str | None, Candidate]:
    """The step on screen: the steered result if there is one, else the model's own."""
    r, frame = session.reasoning, getattr(session, "_obs_frame", None) or session.frame
    if r is None or frame is None:
        raise NothingToJudge("nothing to rate yet: press Step")
    shown = session.steered or r
    edited = shown is not r
    cand = Candidate.from_reasoning(shown, label="operator_edit" if edited else "model", model_id=model_id,
                                    trace=(session.edited_trace or list(shown.trace)) if edited else None)
    return frame.rgb, session.instruction, r.unnorm_key, cand


def comparison(p: PairProposal, answer: str, operator: str, comment: str = "") -> Comparison:
    return Comparison(image=p.image, instruction=p.instruction, model_id=p.model_id, unnorm_key=p.unnorm_key,
                      kind=p.kind, a=p.a, b=p.b, answer=answer, operator=operator or "operator", comment=comment)


class FeedbackWriter:
    """One thread owns the store. ``on_done(kind, record_id, error)`` is called from that thread after
    each write (``error`` is the store's message, or None); ``on_board`` gets a fresh leaderboard."""

    def __init__(self, path: str | Path, on_done: Callable[[str, int | None, str | None], None],
                 on_board: Callable[[Leaderboard], None] | None = None) -> None:
        self.path = Path(path)
        self._on_done, self._on_board = on_done, on_board
        self._queue: queue.Queue = queue.Queue()
        self.error: str | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="feedback-writer", daemon=True)
        self._thread.start()
        self._ready.wait(30)

    def submit(self, record: Comparison | Rating) -> None:
        self._queue.put(record)

    def refresh_board(self) -> None:
        self._queue.put("board")

    def close(self, timeout_s: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _main(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            store = PreferenceStore(self.path)
        except (StoreError, OSError) as e:
            self.error = str(e)
            self._ready.set()
            self._on_done("open", None, self.error)
            while self._queue.get() is not None:    # refuse politely until closed
                self._on_done("write", None, f"feedback is off: {self.error}")
            return
        self._ready.set()
        self._board(store)
        with store:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if item == "board":
                    self._board(store)
                    continue
                kind = "comparison" if isinstance(item, Comparison) else "rating"
                try:
                    rid = store.add_comparison(item) if kind == "comparison" else store.add_rating(item)
                except (StoreError, OSError, ValueError) as e:
                    self._on_done(kind, None, str(e))
                    continue
                except Exception as e:  # noqa: BLE001 - the writer must outlive one bad record
                    self._on_done(kind, None, f"{type(e).__name__}: {e}")
                    continue
                self._on_done(kind, rid, None)
                if kind == "comparison":
                    self._board(store)

    def _board(self, store: PreferenceStore) -> None:
        if self._on_board is None:
            return
        try:
            self._on_board(leaderboard(store.outcomes(), bootstrap=200))
        except (StoreError, ValueError) as e:
            self._on_done("leaderboard", None, str(e))


__all__ = ["FeedbackWriter", "NothingToJudge", "PairProposal", "comparison", "propose_model_vs_edit",
           "propose_two_modes", "rating_subject"]
