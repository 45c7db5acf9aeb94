"""Session events → Qt signals on the UI thread.

The session emits from its worker and frame threads; emitting a signal from there delivers the
payload to slots in the UI thread (queued connection). Frames are coalesced: at most one frame
waits for the UI, so a slow paint drops frames instead of building a backlog.
"""
from __future__ import annotations

import threading

from PySide6 import QtCore

from app import session as s


class SessionBridge(QtCore.QObject):
    frame = QtCore.Signal(object)        # FrameEvent (the newest; older ones not yet shown are dropped)
    reasoning = QtCore.Signal(object)    # ReasoningEvent
    steered = QtCore.Signal(object)      # SteerEvent
    edited = QtCore.Signal(object)       # EditEvent
    action = QtCore.Signal(object)       # ActionEvent
    arm = QtCore.Signal(object)          # ArmEvent
    estop = QtCore.Signal(object)        # EstopEvent
    error = QtCore.Signal(object)        # ErrorEvent
    status = QtCore.Signal(object)       # StatusEvent
    modes = QtCore.Signal(object)        # ModesEvent

    _frame_ready = QtCore.Signal()

    def __init__(self, session: s.Session, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._latest_frame: s.FrameEvent | None = None
        self._frame_scheduled = False
        self.frames_dropped = 0
        self._frame_ready.connect(self._deliver_frame, QtCore.Qt.ConnectionType.QueuedConnection)
        self._routes = {
            s.ReasoningEvent: self.reasoning, s.SteerEvent: self.steered, s.EditEvent: self.edited,
            s.ActionEvent: self.action, s.ArmEvent: self.arm, s.EstopEvent: self.estop,
            s.ErrorEvent: self.error, s.StatusEvent: self.status, s.ModesEvent: self.modes,
        }
        self._unsubscribe = session.subscribe(self._on_event)

    def _on_event(self, event: s.Event) -> None:
        if isinstance(event, s.FrameEvent):
            with self._lock:
                if self._latest_frame is not None:
                    self.frames_dropped += 1
                self._latest_frame = event
                if self._frame_scheduled:
                    return
                self._frame_scheduled = True
            self._frame_ready.emit()
            return
        signal = self._routes.get(type(event))
        if signal is not None:
            signal.emit(event)

    @QtCore.Slot()
    def _deliver_frame(self) -> None:
        with self._lock:
            event, self._latest_frame = self._latest_frame, None
            self._frame_scheduled = False
        if event is not None:
            self.frame.emit(event)

    def detach(self) -> None:
        self._unsubscribe()
