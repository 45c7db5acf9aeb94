"""Python's cycle collector runs on the UI thread only, while a window is open.

CPython collects cycles in whichever thread happens to allocate past a threshold: here often a
session thread (the model worker, the frame thread). When that garbage holds a Qt wrapper
(pyqtgraph's context menus and their actions sit in reference cycles), shiboken defers the C++
delete to the UI thread as a Python pending call, which runs wherever the UI thread next runs Python,
possibly inside a Qt call that holds the object's pool mutex. A local run of the suite hung there
(gdb: ``QObject::~QObject`` waiting on a ``QBasicMutex`` under shiboken's ``runDeletionInMainThread``,
deleting a ``QMenu``'s actions), and CI hung at the same place of the suite.

So while a holder is alive, automatic collection is off and a UI-thread timer collects instead, by
the same generation thresholds CPython uses. Holders are counted: the last release restores the
collector as it was.
"""
from __future__ import annotations

import gc

from PySide6 import QtCore

INTERVAL_MS = 100


class _Collector(QtCore.QObject):
    def __init__(self, interval_ms: int) -> None:
        super().__init__(QtCore.QCoreApplication.instance())
        self.was_enabled = gc.isenabled()
        gc.disable()
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.collect)
        self.timer.start(interval_ms)

    @QtCore.Slot()
    def collect(self) -> int:
        """One collection of the oldest generation whose count passed its threshold (none if none did)."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        generation = -1
        for g in range(3):
            if counts[g] > thresholds[g]:
                generation = g
        return gc.collect(generation) if generation >= 0 else 0

    def stop(self) -> None:
        """Collect what the window left on this thread, then give collection back to CPython."""
        self.timer.stop()
        gc.collect()
        if self.was_enabled:
            gc.enable()
        self.deleteLater()


_collector: _Collector | None = None
_holders = 0


def hold(interval_ms: int = INTERVAL_MS) -> None:
    """Collect on this (the UI) thread until the matching :func:`release`. Needs a QCoreApplication."""
    global _collector, _holders
    if QtCore.QCoreApplication.instance() is None:
        raise RuntimeError("gui_thread_gc.hold() needs a QApplication: the timer runs on its thread")
    if QtCore.QThread.currentThread() != QtCore.QCoreApplication.instance().thread():
        raise RuntimeError("gui_thread_gc.hold() must be called on the UI thread")
    if _holders == 0:
        _collector = _Collector(interval_ms)
    _holders += 1


def release() -> None:
    global _collector, _holders
    if _holders == 0:
        return
    _holders -= 1
    if _holders == 0 and _collector is not None:
        _collector.stop()
        _collector = None


def holders() -> int:
    return _holders
