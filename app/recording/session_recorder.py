"""Record a session's steps as LeRobot episodes, off the session's threads.

Subscribes to the session: one frame per observation (the image the model saw, its reasoning, the
operator's edit and what the arm actually got). Re-decodes of the same observation replace each other
(the last word counts: the action sent, or the last one shown); two actions actually sent on one
observation are two frames. Encoding (≈50 ms a step at 640x480, ≈2 s a save) runs on the recorder's own
thread, so neither the robot loop nor the UI waits for it. Episode control follows lerobot's keys:
``save()`` (right arrow) closes the episode and the next step opens a new one, ``discard()`` (left
arrow) drops it to re-record, ``close()`` (Esc / quit) saves what is open and finishes.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from app.recording.recorder import EpisodeRecorder, StepRecord
from app.recording.store import RecordingError
from app.session import ActionEvent, ReasoningEvent, Session

log = logging.getLogger(__name__)

FINAL = ("sent", "refused", "preview", "no_arm", "failed")


@dataclass(frozen=True)
class RecorderStatus:
    recording: bool
    episode_index: int | None
    frames: int
    saved_episodes: int
    error: str | None = None
    message: str = ""


class SessionRecorder:
    def __init__(self, session: Session, root: str | Path, fps: int = 10,
                 on_status: Callable[[RecorderStatus], None] | None = None) -> None:
        self.session = session
        self.root = Path(root)
        self._on_status = on_status or (lambda st: None)
        self._fps = int(fps)
        # opened at the first step, when the camera's image size is known (RecordingError: bad root,
        # read-only, another recorder on it; reported through on_status and ``error``)
        self._recorder: EpisodeRecorder | None = None
        self._queue: queue.Queue = queue.Queue()
        self._last_reasoning: ReasoningEvent | None = None
        self._pending_record: StepRecord | None = None   # this observation's latest word, not yet queued
        self._pending_sent = False
        self._lock = threading.Lock()
        self._saved = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._main, name="episode-recorder", daemon=True)
        self._thread.start()
        self._unsubscribe = session.subscribe(self._on_event)

    # ------------------------------------------------------------------ session side (any thread)
    def _flush(self) -> None:
        with self._lock:
            record, self._pending_record, self._pending_sent = self._pending_record, None, False
        if record is not None:
            self._queue.put(("step", record))

    def _on_event(self, ev) -> None:
        if isinstance(ev, ReasoningEvent):
            self._flush()                             # a new observation: the previous one's word is final
            self._last_reasoning = ev
        elif isinstance(ev, ActionEvent) and ev.step.status in FINAL and self._last_reasoning is not None:
            r = self._last_reasoning
            state = self.session.arm_state
            vec = None if state is None else np.concatenate(
                [np.asarray(state.ee_position, float), np.asarray(state.ee_rpy, float), [float(state.gripper)]])
            try:
                record = StepRecord.from_action_step(
                    ev.step, r.frame, self.session.instruction, model_trace=r.reasoning.trace,
                    depth_codes=r.reasoning.depth_codes, state=vec)
            except (ValueError, TypeError) as e:
                self._status(f"step {ev.step.index} not recorded: {e}", error=str(e))
                return
            acted = ev.step.status in ("sent", "failed")
            with self._lock:
                if self._pending_sent and acted:      # a second real action on the same frame: keep both
                    self._queue.put(("step", self._pending_record))
                if not (self._pending_sent and not acted):   # a later preview never hides what was sent
                    self._pending_record, self._pending_sent = record, acted

    def save(self) -> None:
        self._flush()
        self._queue.put(("save", None))

    def discard(self) -> None:
        with self._lock:
            had = self._pending_record is not None
            self._pending_record, self._pending_sent = None, False
        self._queue.put(("discard", had))

    def close(self, timeout_s: float = 120.0) -> None:
        """Save the open episode and finish (waits for the encoder)."""
        self._unsubscribe()
        self._flush()
        self._queue.put(("close", None))
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ recorder thread
    def _open(self, rgb: np.ndarray) -> EpisodeRecorder:
        if self._recorder is None:
            self._recorder = EpisodeRecorder(self.root, fps=self._fps, robot_type=_robot_type(self.session),
                                             image_size=(rgb.shape[0], rgb.shape[1]))
        return self._recorder

    def _main(self) -> None:
        while True:
            what, item = self._queue.get()
            rec = self._recorder
            if what == "discard" and (rec is None or not rec.recording):
                self._status("episode discarded: re-recording" if item else "nothing to discard")
                continue
            if rec is None and what != "step":
                if what == "close":
                    self._status("recording closed (nothing was recorded)")
                    return
                continue
            try:
                if what == "step":
                    rec = self._open(item.rgb)
                    if not rec.recording:
                        rec.start_episode(item.instruction)
                    rec.add_step(item)
                    self._status("")
                elif what == "save":
                    if rec.recording and rec.num_frames:
                        saved = rec.save_episode()
                        self._saved += 1
                        self._status(f"episode {saved.episode_index} saved ({saved.length} frames)")
                    elif rec.recording:
                        rec.discard_episode()
                        self._status("nothing recorded yet")
                elif what == "discard":
                    if rec.recording:
                        index = rec.episode_index
                        rec.discard_episode()
                        self._status(f"episode {index} discarded: re-recording")
                elif what == "close":
                    saved = rec.recording and rec.num_frames > 0
                    rec.close(save=True)
                    if saved:
                        self._saved += 1
                    self._status(f"recording closed ({self._saved} episode(s) saved to {self.root})")
                    return
            except RecordingError as e:
                self.error = str(e)
                self._status(f"recording failed: {e}", error=str(e))
                if what == "close":
                    try:
                        if rec is not None:
                            rec.close(save=False)
                    except RecordingError:
                        pass
                    return
            except Exception as e:  # noqa: BLE001 - the robot loop must not die with the recorder
                log.exception("recorder failed on %s", what)
                self.error = f"{type(e).__name__}: {e}"
                self._status(f"recording failed: {self.error}", error=self.error)

    def _status(self, message: str, error: str | None = None) -> None:
        rec = self._recorder
        on = rec is not None and rec.recording
        self._on_status(RecorderStatus(recording=on, episode_index=rec.episode_index if on else None,
                                       frames=rec.num_frames if on else 0, saved_episodes=self._saved,
                                       error=error, message=message))


def _robot_type(session: Session) -> str:
    arm = session.arm
    return "none" if arm is None else getattr(arm, "name", "arm")


__all__ = ["RecorderStatus", "SessionRecorder"]
