"""The operator window offscreen, on the embedded default (simulated cell + the sim-trained model): real mouse
events on the camera view's viewport, the e-stop key, and a clean close."""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from app.config import StationConfig  # noqa: E402
from app.session import SteerEvent  # noqa: E402
from app.station import open_session  # noqa: E402
from widgets.app import configure_pyqtgraph  # noqa: E402

L = QtCore.Qt.MouseButton.LeftButton
R = QtCore.Qt.MouseButton.RightButton
NOMOD = QtCore.Qt.KeyboardModifier.NoModifier


@pytest.fixture
def window(qtbot):
    configure_pyqtgraph()
    from widgets.main_window import MainWindow

    session = open_session(StationConfig())
    win = MainWindow(session)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    session.start()
    yield win
    win.close()


def reasoned(qtbot, win) -> None:
    win.step()
    qtbot.waitUntil(lambda: win.session.reasoning is not None and win._model_trace is not None
                    and win.session.frame is not None, timeout=20000)
    qtbot.waitUntil(lambda: win.session.wait_idle(0.01), timeout=20000)
    QtCore.QCoreApplication.processEvents()


def drag(view, start_px, end_px, steps: int = 10) -> None:
    vp = view.viewport()
    a, b = view.to_viewport(*start_px), view.to_viewport(*end_px)
    QTest.mousePress(vp, L, NOMOD, a)
    for i in range(1, steps + 1):
        QTest.mouseMove(vp, a + (b - a) * i / steps)
    QTest.mouseRelease(vp, L, NOMOD, b)


def test_dragging_a_waypoint_redecodes_once_and_labels_the_action(qtbot, window):
    win, s = window, window.session
    steers: list[SteerEvent] = []
    s.subscribe(lambda ev: steers.append(ev) if isinstance(ev, SteerEvent) else None)
    reasoned(qtbot, win)
    model_trace = list(s.reasoning.trace)
    start = win.camera_view.edit_trace.points()[0]
    h, w = s.frame.rgb.shape[:2]
    end = (float(np.clip(start[0] + 120, 0, w - 1)), float(np.clip(start[1] + 80, 0, h - 1)))
    if abs(end[0] - start[0]) < 50:                      # near the right edge: drag the other way
        end = (start[0] - 120, end[1])
    drag(win.camera_view, start, end)
    qtbot.waitUntil(lambda: len(steers) >= 1, timeout=20000)
    assert s.wait_idle(20)
    QtCore.QCoreApplication.processEvents()
    edited = s.edited_trace
    expected = win.camera_view.to_model(*end)
    assert edited is not None and edited != model_trace
    assert abs(edited[0][0] - expected[0]) <= 1 and abs(edited[0][1] - expected[1]) <= 1
    # the ten mouse moves were "changing"; only the release re-decoded
    assert s.counters["steer"] == 1 and len(steers) == 1
    assert steers[0].reasoning.trace == edited
    qtbot.waitUntil(lambda: win.action_panel.mode_text() == "steer_text", timeout=5000)
    assert s.pending_step.mode == "steer_text"


def test_visual_steering_labels_the_action_steer_visual(qtbot, window):
    win, s = window, window.session
    reasoned(qtbot, win)
    win.toggle_steer()
    assert s.steer_mode == "visual"
    start = win.camera_view.edit_trace.points()[0]
    drag(win.camera_view, start, (start[0] + 40 if start[0] < 500 else start[0] - 40, start[1] + 30))
    qtbot.waitUntil(lambda: s.counters["steer"] == 1 and s.wait_idle(0.01), timeout=20000)
    qtbot.waitUntil(lambda: win.action_panel.mode_text() == "steer_visual", timeout=5000)


def test_delete_and_insert_waypoints_with_the_mouse(qtbot, window):
    """Right-click deletes a waypoint, double-click inserts one where clicked (deleting first: the
    embedded model's traces have 5 points, the most a trace may have)."""
    win, s = window, window.session
    reasoned(qtbot, win)
    n = len(s.current_trace)
    assert n >= 2
    h, w = s.frame.rgb.shape[:2]
    last = win.camera_view.edit_trace.points()[-1]
    QTest.mouseClick(win.camera_view.viewport(), R, NOMOD, win.camera_view.to_viewport(*last))
    qtbot.waitUntil(lambda: s.edited_trace is not None and len(s.edited_trace) == n - 1, timeout=5000)
    assert s.wait_idle(20)
    QtCore.QCoreApplication.processEvents()
    first = win.camera_view.edit_trace.points()[0]
    target = (float(np.clip(first[0] + 150, 0, w - 1)), float(np.clip(first[1] - 100, 0, h - 1)))
    if abs(target[0] - first[0]) < 60:
        target = (first[0] - 150, target[1])
    QTest.mouseDClick(win.camera_view.viewport(), L, NOMOD, win.camera_view.to_viewport(*target))
    qtbot.waitUntil(lambda: len(s.edited_trace) == n, timeout=5000)
    assert s.wait_idle(20)
    QtCore.QCoreApplication.processEvents()
    pts = win.camera_view.edit_trace.points()
    assert len(pts) == n and np.min(np.linalg.norm(pts - np.array(target), axis=1)) < 5.0


def test_escape_latches_the_estop_from_a_text_field_and_blocks_sending(qtbot, window):
    win, s = window, window.session
    reasoned(qtbot, win)
    s.enable_arm()
    qtbot.waitUntil(lambda: s.arm.enabled, timeout=5000)
    joints = s.arm.state().joint_positions.copy()
    win.controls.instruction.setFocus()
    QTest.keyClick(win.controls.instruction, QtCore.Qt.Key.Key_Escape)
    assert s.estopped and not s.arm.enabled
    assert "LATCHED" in win.controls.estop.text()
    assert s.last_step.status == "refused" and any("estop" in r for r in s.last_step.safety)
    s.enable_arm()                                       # refused while latched
    assert s.wait_idle(5) and not s.arm.enabled
    # Even an arm enabled behind the session's back gets nothing: the latched guard refuses the send.
    s.arm.enable()
    calls = []
    original = s.arm.send_action
    s.arm.send_action = lambda a: calls.append(a) or original(a)
    win.step()
    qtbot.waitUntil(lambda: s.wait_idle(0.01) and s.pending_step is not None, timeout=20000)
    win.go()
    assert s.wait_idle(20)
    assert calls == []                                   # send_action was never called
    assert s.last_step.status == "refused" and any(r.startswith("estop") for r in s.last_step.safety)
    np.testing.assert_allclose(s.arm.state().joint_positions, joints, atol=1e-3)


def test_help_dialog_lists_every_shortcut(qtbot, window):
    from widgets.shortcuts import SHORTCUTS
    window.show_help()
    table = window.help_dialog.table
    keys = {table.item(r, 0).text() for r in range(table.rowCount())}
    assert {sc.key for sc in SHORTCUTS} <= keys
    assert "Esc" in keys


def test_status_bar_shows_device_and_latency(qtbot, window):
    reasoned(qtbot, window)
    qtbot.waitUntil(lambda: "ms" in window.status_labels["reason"].text(), timeout=5000)
    assert "CPU" in window.status_labels["model"].text()
    assert "sim-front" in window.status_labels["camera"].text()


def test_window_closes_with_no_thread_left(qtbot):
    configure_pyqtgraph()
    from widgets import gui_thread_gc
    from widgets.main_window import MainWindow

    before = {t.ident for t in threading.enumerate()}
    holders = gui_thread_gc.holders()
    session = open_session(StationConfig())
    win = MainWindow(session)
    assert gui_thread_gc.holders() == holders + 1       # while open, the UI thread does the collecting
    qtbot.addWidget(win)
    win.show()
    session.start()
    win.step()
    qtbot.waitUntil(lambda: session.reasoning is not None, timeout=20000)
    win.close()
    win.close()                                          # twice: released once
    assert gui_thread_gc.holders() == holders
    assert session.threads_alive == []
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []


def test_a_wrist_camera_the_model_reads_is_shown_as_it_saw_it(qtbot, tmp_path):
    """A checkpoint taking front + wrist images: the window adds a view of the wrist image the model
    reasoned on (the main camera view keeps the front image and the trace)."""
    from app.config import ModelConfig
    from tests.checkpoints import tiny_with_cameras
    configure_pyqtgraph()
    from widgets.main_window import MainWindow
    ck = tiny_with_cameras(tmp_path, ["front", "wrist"])
    session = open_session(StationConfig(model=ModelConfig(path=str(ck))))
    win = MainWindow(session)
    qtbot.addWidget(win)
    win.show()
    session.start()
    try:
        assert len(win.extra_views) == 1 and win.extra_views[0].pixmap().isNull()
        reasoned(qtbot, win)
        qtbot.waitUntil(lambda: not win.extra_views[0].pixmap().isNull(), timeout=5000)
        pix = win.extra_views[0].pixmap()
        assert abs(pix.width() / pix.height() - 320 / 240) < 0.05
    finally:
        win.close()


def test_a_one_image_model_adds_no_camera_view(qtbot):
    configure_pyqtgraph()
    from app.config import ModelConfig
    from widgets.main_window import MainWindow
    from pathlib import Path
    tiny = Path(__file__).resolve().parents[2] / "assets" / "tiny-molmoact"
    session = open_session(StationConfig(model=ModelConfig(path=str(tiny))))
    win = MainWindow(session)
    qtbot.addWidget(win)
    try:
        assert win.extra_views == []
    finally:
        win.close()
