"""Cycles that hold Qt objects are freed on the UI thread, not by whichever thread allocates."""
from __future__ import annotations

import gc
import threading

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore  # noqa: E402

from widgets import gui_thread_gc  # noqa: E402


class Owned(QtCore.QObject):
    """A Python-owned QObject in a reference cycle, as pyqtgraph's menus are; says where it died."""
    died_in: list[str] = []

    def __init__(self) -> None:
        super().__init__()
        self.me = self

    def __del__(self) -> None:
        Owned.died_in.append(threading.current_thread().name)


def drop_cycles_then_allocate_in_a_worker(n: int = 300) -> None:
    Owned.died_in = []
    for _ in range(n):
        Owned()                                          # unreachable at once; only the collector frees it
    worker = threading.Thread(target=lambda: [[i] for i in range(20_000)], name="session-worker")
    worker.start()
    worker.join()


def test_without_the_guard_a_worker_thread_frees_the_qt_objects():
    """The failure mode is real: CPython collects in the thread that allocates."""
    was = gc.isenabled()
    gc.enable()
    try:
        drop_cycles_then_allocate_in_a_worker()
    finally:
        if not was:
            gc.disable()
        gc.collect()
    assert "session-worker" in Owned.died_in


def test_while_held_the_ui_thread_frees_them(qtbot):
    assert gui_thread_gc.holders() >= 1 and not gc.isenabled()   # the GUI tests' session fixture holds
    drop_cycles_then_allocate_in_a_worker()
    assert Owned.died_in == []                                   # the worker collected nothing
    qtbot.waitUntil(lambda: len(Owned.died_in) == 300, timeout=5000)   # the timer did, here
    assert set(Owned.died_in) == {threading.main_thread().name}


def test_holds_are_counted_and_the_last_release_restores_the_collector(qtbot):
    gui_thread_gc.release()                              # the session fixture's hold, taken back below
    try:
        assert gui_thread_gc.holders() == 0 and gc.isenabled()
        gui_thread_gc.hold()
        gui_thread_gc.hold()
        gui_thread_gc.release()
        assert gui_thread_gc.holders() == 1 and not gc.isenabled()
        gui_thread_gc.release()
        assert gui_thread_gc.holders() == 0 and gc.isenabled()
        gui_thread_gc.release()                          # one release too many changes nothing
        assert gc.isenabled()
    finally:
        gui_thread_gc.hold()


def test_hold_off_the_ui_thread_is_refused(qapp):
    errors = []

    def off_thread():
        try:
            gui_thread_gc.hold()
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=off_thread)
    t.start()
    t.join()
    assert errors and "UI thread" in errors[0]
