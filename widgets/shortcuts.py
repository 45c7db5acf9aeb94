"""One shortcut table: the window binds from it and the help dialog lists it."""
from __future__ import annotations

from dataclasses import dataclass

from PySide6 import QtCore, QtGui, QtWidgets


@dataclass(frozen=True)
class Shortcut:
    key: str            # QKeySequence text
    action: str         # the window's handler name
    description: str


ESTOP_KEY = "Esc"
SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut(ESTOP_KEY, "estop", "E-STOP: latch the safety guard and stop the arm (works from any field); "
             "a recorded episode stops there: → saves it, ← discards it"),
    Shortcut("Ctrl+R", "reset", "Reset the e-stop latch (the arm stays disabled until enabled again)"),
    Shortcut("Ctrl+E", "toggle_arm", "Enable / disable the arm"),
    Shortcut("S", "step", "Step: reason once on a fresh frame"),
    Shortcut("G", "go", "Go: send the action on screen (step and confirm modes)"),
    Shortcut("P", "toggle_play", "Play / pause the loop (preview, confirm, auto)"),
    Shortcut("1", "mode_step", "Run mode: step"),
    Shortcut("2", "mode_preview", "Run mode: preview (never moves the arm)"),
    Shortcut("3", "mode_confirm", "Run mode: confirm (each action waits for Go)"),
    Shortcut("4", "mode_auto", "Run mode: auto (closed loop)"),
    Shortcut("T", "toggle_steer", "Steering mode: text <-> visual"),
    Shortcut("C", "clear_edit", "Clear the operator's edit (back to the model's trace)"),
    Shortcut("O", "cycle_overlay", "Depth overlay on the camera view: off -> model -> sensor"),
    Shortcut("K", "compare_pair", "Feedback: compare the model's trace (A) with your edit (B)"),
    Shortcut("M", "compare_modes", "Feedback: compare the trace decoded with steer_text (A) and steer_visual (B)"),
    Shortcut("A", "prefer_a", "Feedback: A is better"),
    Shortcut("B", "prefer_b", "Feedback: B is better"),
    Shortcut("=", "prefer_tie", "Feedback: tie"),
    Shortcut("X", "prefer_both_bad", "Feedback: both bad"),
    Shortcut("Right", "save_episode", "Recording (--record): save the episode; the next step starts a new one"),
    Shortcut("Left", "rerecord_episode", "Recording: discard the episode and re-record it"),
    Shortcut("F1", "show_help", "This table"),
    Shortcut("Ctrl+Q", "close", "Quit (stops the arm first)"),
)
MOUSE: tuple[tuple[str, str], ...] = (
    ("Drag a waypoint", "Move it; the action is re-decoded when you release"),
    ("Double-click the image", "Insert a waypoint on the nearest segment (at most 5)"),
    ("Right-click / Ctrl+click a waypoint", "Delete it"),
    ("Drag the background / wheel", "Pan / zoom the view"),
)


def bind(window: QtWidgets.QWidget) -> list[QtGui.QShortcut]:
    """A QShortcut per entry (except the e-stop, which an application-wide filter handles so that no
    focused widget can swallow it), each calling ``window.<action>()``."""
    made = []
    for sc in SHORTCUTS:
        if sc.key == ESTOP_KEY:
            continue
        q = QtGui.QShortcut(QtGui.QKeySequence(sc.key), window)
        q.setContext(QtCore.Qt.ShortcutContext.WindowShortcut)
        q.activated.connect(getattr(window, sc.action))
        made.append(q)
    return made


class HelpDialog(QtWidgets.QDialog):
    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keys and mouse")
        rows = [(sc.key, sc.description) for sc in SHORTCUTS] + list(MOUSE)
        table = QtWidgets.QTableWidget(len(rows), 2, self)
        table.setObjectName("shortcutTable")
        table.setHorizontalHeaderLabels(["Key", "Does"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        for r, (key, text) in enumerate(rows):
            table.setItem(r, 0, QtWidgets.QTableWidgetItem(key))
            table.setItem(r, 1, QtWidgets.QTableWidgetItem(text))
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(table)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close, parent=self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.table = table
        self.resize(620, 520)
