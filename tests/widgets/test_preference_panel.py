"""The feedback panel in the window: compare the model's trace with the operator's edit by keys, rate a
step, the leaderboard updates; a store that cannot be opened says so and is left untouched."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
from PySide6 import QtCore, QtWidgets  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from app.config import StationConfig  # noqa: E402
from app.feedback import PreferenceStore  # noqa: E402
from app.station import open_session  # noqa: E402
from widgets.app import configure_pyqtgraph  # noqa: E402


@pytest.fixture
def make_window(qtbot):
    configure_pyqtgraph()
    from widgets.main_window import MainWindow
    made = []

    def _make(feedback_path):
        session = open_session(StationConfig())
        win = MainWindow(session, feedback_path=str(feedback_path))
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        win.raise_()
        win.activateWindow()                                # window shortcuts need the active window
        qtbot.waitUntil(lambda: QtWidgets.QApplication.activeWindow() is win, timeout=5000)
        session.start()
        made.append(win)
        return win

    yield _make
    for win in made:
        win.close()


def key(win, k) -> None:
    """A key press where the operator's keyboard goes: the focused widget (the camera view at start)."""
    QTest.keyClick(QtWidgets.QApplication.focusWidget() or win, k)


def stepped_and_edited(qtbot, win) -> None:
    s = win.session
    win.step()
    qtbot.waitUntil(lambda: s.reasoning is not None and s.wait_idle(0.01), timeout=20000)
    x, y = s.current_trace[0]
    s.move_waypoint(0, min(255, x + 40), y, final=True)
    qtbot.waitUntil(lambda: s.steered is not None and s.wait_idle(0.01), timeout=20000)
    QtCore.QCoreApplication.processEvents()


def test_compare_by_keys_stores_the_answer_and_updates_the_leaderboard(qtbot, make_window, tmp_path):
    db = tmp_path / "fb.sqlite"
    win = make_window(db)
    panel = win.preference_panel
    key(win, QtCore.Qt.Key.Key_K)              # nothing to compare yet: said, not crashed
    assert "Step" in panel.status.text()
    stepped_and_edited(qtbot, win)
    key(win, QtCore.Qt.Key.Key_K)
    assert panel.proposal is not None and panel.buttons["B"].isEnabled()
    key(win, QtCore.Qt.Key.Key_B)               # one key per answer
    qtbot.waitUntil(lambda: "saved comparison" in panel.status.text(), timeout=10000)
    qtbot.waitUntil(lambda: panel.board_table.rowCount() == 2, timeout=10000)
    assert panel.board_table.item(0, 0).text() == "operator_edit"   # the edit won its only game
    win.close()
    with PreferenceStore(db, readonly=True) as store:
        (c,) = list(store.comparisons())
    assert c.answer == "B" and c.kind == "model_vs_edit"
    assert c.a.label == "model" and c.b.label == "operator_edit" and c.b.mode == "steer_text"
    assert c.instruction == "pick up the red cube" and c.image.shape == (480, 640, 3)


def test_rating_the_step_on_screen(qtbot, make_window, tmp_path):
    db = tmp_path / "fb.sqlite"
    win = make_window(db)
    panel = win.preference_panel
    win.step()
    qtbot.waitUntil(lambda: win.session.reasoning is not None and win.session.wait_idle(0.01), timeout=20000)
    panel.scores["depth"].setCurrentIndex(2)               # "2"
    panel.scores["action"].setCurrentIndex(5)              # "5"
    panel.note.setText("depth looks flat")
    qtbot.mouseClick(panel.findChild(type(panel.compare), "saveRating"), QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "saved rating" in panel.status.text(), timeout=10000)
    win.close()
    with PreferenceStore(db, readonly=True) as store:
        (r,) = list(store.ratings())
    assert (r.depth_score, r.trace_score, r.action_score, r.note) == (2, None, 5, "depth looks flat")
    assert r.candidate.mode == "reason" and len(r.candidate.depth_codes) == 100


def test_a_store_that_cannot_be_opened_is_reported_and_left_alone(qtbot, make_window, tmp_path):
    db = tmp_path / "not-a-db.sqlite"
    db.write_bytes(b"this is not sqlite" * 100)
    before = db.read_bytes()
    win = make_window(db)
    panel = win.preference_panel
    qtbot.waitUntil(lambda: "not saved" in panel.status.text() or "not a SQLite" in panel.status.text(),
                    timeout=10000)
    assert "not a SQLite" in panel.status.text() and panel.status.styleSheet()
    stepped_and_edited(qtbot, win)
    win.compare_pair()
    win.prefer_a()
    qtbot.waitUntil(lambda: "feedback is off" in panel.status.text(), timeout=10000)
    win.close()
    assert db.read_bytes() == before


def test_one_answer_per_comparison_and_digits_stay_in_the_score_box(qtbot, make_window, tmp_path):
    db = tmp_path / "fb.sqlite"
    win = make_window(db)
    panel = win.preference_panel
    stepped_and_edited(qtbot, win)
    key(win, QtCore.Qt.Key.Key_K)
    key(win, QtCore.Qt.Key.Key_A)
    key(win, QtCore.Qt.Key.Key_A)                          # a double tap
    key(win, QtCore.Qt.Key.Key_B)                          # a change of mind after answering
    qtbot.waitUntil(lambda: "saved comparison" in panel.status.text(), timeout=10000)
    box = panel.scores["depth"]
    box.setFocus()
    qtbot.waitUntil(lambda: QtWidgets.QApplication.focusWidget() is box, timeout=5000)
    QTest.keyClick(box, QtCore.Qt.Key.Key_4)               # "4" is also the auto run-mode key
    assert win.session.run_mode.value == "step" and box.currentText() == "4"
    win.close()
    with PreferenceStore(db, readonly=True) as store:
        assert [c.answer for c in store.comparisons()] == ["A"]


def test_compare_the_two_steering_modes(qtbot, make_window, tmp_path):
    db = tmp_path / "fb.sqlite"
    win = make_window(db)
    panel = win.preference_panel
    stepped_and_edited(qtbot, win)
    pending = win.session.pending_step
    key(win, QtCore.Qt.Key.Key_M)
    qtbot.waitUntil(lambda: panel.proposal is not None and panel.proposal.kind == "two_modes", timeout=20000)
    assert win.session.pending_step.index == pending.index        # comparing sends and replaces nothing
    assert panel.a_view.title.toPlainText() == "A: steer_text"
    key(win, QtCore.Qt.Key.Key_Equal)                               # tie
    qtbot.waitUntil(lambda: "saved comparison" in panel.status.text(), timeout=10000)
    win.close()
    with PreferenceStore(db, readonly=True) as store:
        (c,) = list(store.comparisons())
    assert c.kind == "two_modes" and c.answer == "tie"
    assert (c.a.mode, c.b.mode) == ("steer_text", "steer_visual") and c.a.trace == c.b.trace
