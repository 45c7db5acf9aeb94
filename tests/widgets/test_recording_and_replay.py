"""Recording from the window with lerobot's keys (→ save, ← re-record, Esc stops and keeps), then the
replay view scrubbing what was recorded."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtWidgets  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from app.config import StationConfig  # noqa: E402
from app.recording.reader import EpisodeReader  # noqa: E402
from app.station import open_session  # noqa: E402
from widgets.app import configure_pyqtgraph  # noqa: E402


def key(k) -> None:
    QTest.keyClick(QtWidgets.QApplication.focusWidget(), k)


def one_step(qtbot, win) -> None:
    s = win.session
    n = s.counters["reason"]
    win.step()
    qtbot.waitUntil(lambda: s.counters["reason"] == n + 1 and s.wait_idle(0.01), timeout=20000)
    win.go()                                             # refused (arm disabled): still a recorded step
    qtbot.waitUntil(lambda: s.wait_idle(0.01) and s.pending_step is None, timeout=20000)


def test_record_with_keys_then_replay(qtbot, tmp_path):
    configure_pyqtgraph()
    from widgets.main_window import MainWindow
    from widgets.replay_view import ReplayWindow

    root = tmp_path / "episodes"
    session = open_session(StationConfig())
    win = MainWindow(session, record_dir=str(root), record_fps=5)
    qtbot.addWidget(win)
    win.show()
    win.raise_()
    win.activateWindow()
    qtbot.waitUntil(lambda: QtWidgets.QApplication.activeWindow() is win, timeout=5000)
    session.start()

    one_step(qtbot, win)
    one_step(qtbot, win)
    key(QtCore.Qt.Key.Key_Right)                          # save episode 0 (2 frames)
    qtbot.waitUntil(lambda: "saved" in win.message.text(), timeout=30000)
    one_step(qtbot, win)
    key(QtCore.Qt.Key.Key_Left)                           # discard: re-record
    qtbot.waitUntil(lambda: "discarded" in win.message.text(), timeout=30000)
    one_step(qtbot, win)
    session.move_waypoint(0, 200, 200, final=True)        # an operator edit, then Go
    qtbot.waitUntil(lambda: session.steered is not None and session.wait_idle(0.01), timeout=20000)
    win.go()
    qtbot.waitUntil(lambda: session.wait_idle(0.01) and session.pending_step is None, timeout=20000)
    key(QtCore.Qt.Key.Key_Escape)                         # e-stop: the episode stops, kept open for → / ←
    assert session.estopped and "→ to save" in win.message.text()
    key(QtCore.Qt.Key.Key_Right)                          # the operator keeps it
    qtbot.waitUntil(lambda: "2 saved" in win.status_labels["rec"].text(), timeout=30000)
    win.close()                                           # waits for the encoder

    info = json.loads((root / "meta" / "info.json").read_text())
    # one frame per observation: the re-decode and second Go on the last frame replaced its first word
    assert info["total_episodes"] == 2 and info["total_frames"] == 3
    reader = EpisodeReader(root)
    assert [e.length for e in reader.episodes()] == [2, 1]
    f = reader.frame(1, 0)
    assert f.mode == "steer_text" and f.intervention and f.trace[0] == (200, 200)
    assert not f.sent and f.status == "refused" and any("disabled" in r for r in f.safety_reasons)
    assert len(f.depth_codes) == 100 and f.rgb.shape == (480, 640, 3)
    reader.close()

    replay = ReplayWindow(root)
    qtbot.addWidget(replay)
    replay.show()
    assert replay.episode.count() == 2
    replay.episode.setCurrentIndex(0)
    replay.slider.setValue(1)
    assert replay.current.frame_index == 1 and not replay.current.intervention
    replay.episode.setCurrentIndex(1)
    assert replay.current.frame_index == 0 and replay.current.intervention
    assert "steer_text" in replay.details.text() and "operator" in replay.details.text()
    edited = replay.camera_view.edit_trace.points()
    assert len(edited) and np.allclose(edited[0], [200 / 255 * 639, 200 / 255 * 479], atol=1)
    replay.close()
