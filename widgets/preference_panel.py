"""The feedback panel: the model's trace and the operator's edit side by side on the same frame, one key
per answer (A, B, = tie, X both bad), a 1-5 rating of the step, and the leaderboard (table + plot).

Views only: proposals come from ``app.feedback.collect``, writes go through its ``FeedbackWriter``.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from app import trace as tr
from app.feedback.collect import PairProposal
from app.feedback.leaderboard import Leaderboard
from widgets.camera_view import EDIT_TRACE_COLOR, MODEL_TRACE_COLOR
from widgets.trace_item import TraceItem

ANSWER_KEYS = (("A", "A better (A)"), ("B", "B better (B)"), ("tie", "Tie (=)"), ("both_bad", "Both bad (X)"))


def _action_text(action) -> str:
    return " ".join(f"{float(v):+.3f}" for v in action)


class _KeepKeys(QtCore.QObject):
    """A focused input keeps its plain keys: a digit typed into a score box must not switch the run mode
    (the window's single-key shortcuts would otherwise take it first)."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QtCore.QEvent.Type.ShortcutOverride and event.key() != QtCore.Qt.Key.Key_Escape:
            mods = event.modifiers() & ~QtCore.Qt.KeyboardModifier.KeypadModifier
            if mods in (QtCore.Qt.KeyboardModifier.NoModifier, QtCore.Qt.KeyboardModifier.ShiftModifier):
                event.accept()
        return False


class _Candidate(pg.GraphicsLayoutWidget):
    def __init__(self, title: str, color) -> None:
        super().__init__()
        self.setMinimumSize(200, 150)
        self.vb = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.vb.setMouseEnabled(False, False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.trace = TraceItem(color, symbol_size=9, editable=False)
        self.vb.addItem(self.image)
        self.vb.addItem(self.trace)
        self.title = pg.TextItem(title, color=(255, 255, 255), fill=pg.mkBrush(0, 0, 0, 150))
        self.vb.addItem(self.title)

    def show_candidate(self, rgb: np.ndarray, trace) -> None:
        h, w = rgb.shape[:2]
        self.image.setImage(rgb, autoLevels=False, levels=(0, 255))
        self.trace.set_points(tr.to_pixels(trace, w, h))
        self.vb.autoRange(padding=0.0)


class PreferencePanel(QtWidgets.QWidget):
    answered = QtCore.Signal(str, str)                # answer, comment
    ratingSubmitted = QtCore.Signal(object, object, object, str)   # depth, trace, action (int | None), note
    compareRequested = QtCore.Signal()
    compareModesRequested = QtCore.Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("preferencePanel")
        self.proposal: PairProposal | None = None
        self.a_view = _Candidate("A: model", MODEL_TRACE_COLOR)
        self.b_view = _Candidate("B: your edit", EDIT_TRACE_COLOR)
        self.a_text, self.b_text = QtWidgets.QLabel("—"), QtWidgets.QLabel("—")
        for label in (self.a_text, self.b_text):
            label.setWordWrap(True)
        self.prompt = QtWidgets.QLabel("Step, drag a waypoint, then compare (K)")
        self.prompt.setObjectName("feedbackPrompt")
        self.compare = QtWidgets.QPushButton("Compare model vs edit (K)")
        self.compare.clicked.connect(self.compareRequested)
        self.compare_modes = QtWidgets.QPushButton("text vs visual (M)")
        self.compare_modes.setToolTip("Decode the same trace with steer_text and steer_visual and compare them")
        self.compare_modes.clicked.connect(self.compareModesRequested)
        self.operator = QtWidgets.QLineEdit("operator")
        self.operator.setObjectName("operatorId")
        self.comment = QtWidgets.QLineEdit()
        self.comment.setPlaceholderText("optional comment")
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        answers = QtWidgets.QHBoxLayout()
        for value, text in ANSWER_KEYS:
            b = QtWidgets.QPushButton(text)
            b.setObjectName(f"answer_{value}")
            b.clicked.connect(lambda _=False, v=value: self.answer(v))
            b.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
            self.buttons[value] = b
            answers.addWidget(b)
        self.scores: dict[str, QtWidgets.QComboBox] = {}
        rating = QtWidgets.QHBoxLayout()
        for name in ("depth", "trace", "action"):
            box = QtWidgets.QComboBox()
            box.setObjectName(f"score_{name}")
            box.addItem("–", None)
            for v in range(1, 6):
                box.addItem(str(v), v)
            self.scores[name] = box
            rating.addWidget(QtWidgets.QLabel(name))
            rating.addWidget(box)
        self.note = QtWidgets.QLineEdit()
        self.note.setPlaceholderText("note on this step")
        save = QtWidgets.QPushButton("Save rating")
        save.setObjectName("saveRating")
        save.clicked.connect(self._rate)
        rating.addWidget(self.note, 1)
        rating.addWidget(save)
        self.status = QtWidgets.QLabel("")
        self.status.setObjectName("feedbackStatus")
        self.status.setWordWrap(True)
        self.board_table = QtWidgets.QTableWidget(0, 5)
        self.board_table.setObjectName("leaderboard")
        self.board_table.setHorizontalHeaderLabels(["label", "score", "95% CI", "W-L-T", "n"])
        self.board_table.verticalHeader().setVisible(False)
        self.board_table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.board_plot = pg.PlotWidget()
        self.board_plot.setMinimumHeight(110)
        self.board_plot.setLabel("left", "Bradley-Terry score")
        self.board_points = pg.ScatterPlotItem(size=9, brush=pg.mkBrush(0, 200, 255))
        self.board_bars = pg.ErrorBarItem(pen=pg.mkPen(200, 200, 200))
        self.board_plot.addItem(self.board_bars)
        self.board_plot.addItem(self.board_points)

        pair = QtWidgets.QGridLayout()
        pair.addWidget(self.a_view, 0, 0)
        pair.addWidget(self.b_view, 0, 1)
        pair.addWidget(self.a_text, 1, 0)
        pair.addWidget(self.b_text, 1, 1)
        who = QtWidgets.QHBoxLayout()
        who.addWidget(self.compare)
        who.addWidget(self.compare_modes)
        who.addWidget(QtWidgets.QLabel("operator"))
        who.addWidget(self.operator)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.prompt)
        layout.addLayout(who)
        layout.addLayout(pair, 3)
        layout.addLayout(answers)
        layout.addWidget(self.comment)
        layout.addWidget(QtWidgets.QLabel("Rate the step on screen (1 bad .. 5 good)"))
        layout.addLayout(rating)
        layout.addWidget(self.status)
        layout.addWidget(self.board_table, 1)
        layout.addWidget(self.board_plot, 1)
        self._set_answerable(False)
        self._keep_keys = _KeepKeys(self)
        for w in (*self.scores.values(), self.board_table):
            w.installEventFilter(self._keep_keys)
        self.comment.returnPressed.connect(self._back_to_keys)
        self.note.returnPressed.connect(self._back_to_keys)

    def _back_to_keys(self) -> None:
        """Enter in a text field hands the keyboard back to the single-key answers."""
        w = self.window()
        if hasattr(w, "camera_view"):
            w.camera_view.setFocus()

    # ---------------------------------------------------------------------------- in
    def show_proposal(self, p: PairProposal) -> None:
        self.proposal = p
        self.a_view.title.setText(f"A: {p.a.label}")
        self.b_view.title.setText(f"B: {p.b.label}")
        self.a_view.show_candidate(p.image, p.a.trace)
        self.b_view.show_candidate(p.image, p.b.trace)
        self.a_text.setText(f"{p.a.mode}: {_action_text(p.a.action)}")
        self.b_text.setText(f"{p.b.mode}: {_action_text(p.b.action)}")
        self.prompt.setText(f"Which is better for \u201c{p.instruction}\u201d?  A / B / = / X")
        self._set_answerable(True)

    def show_message(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #c00000; font-weight: bold;" if error else "")
        self.status.setText(text)

    def show_board(self, board: Leaderboard) -> None:
        rows = board.rows
        self.board_table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            cells = (r.label, f"{r.score:.0f}", f"{r.ci_low:.0f} .. {r.ci_high:.0f}",
                     f"{r.wins}-{r.losses}-{r.ties}", str(r.n))
            for j, text in enumerate(cells):
                self.board_table.setItem(i, j, QtWidgets.QTableWidgetItem(text))
        self.board_table.resizeColumnsToContents()
        if rows:
            x = np.arange(len(rows), dtype=float)
            y = np.array([r.score for r in rows])
            self.board_points.setData(x, y)
            self.board_bars.setData(x=x, y=y, top=np.array([r.ci_high for r in rows]) - y,
                                    bottom=y - np.array([r.ci_low for r in rows]), beam=0.2)
            self.board_plot.getAxis("bottom").setTicks([[(float(i), r.label) for i, r in enumerate(rows)]])

    # ---------------------------------------------------------------------------- out
    def answer(self, value: str) -> None:
        if self.proposal is None:
            self.show_message("nothing to answer: compare first (K)", error=True)
            return
        self.answered.emit(value, self.comment.text().strip())
        self.proposal = None                          # one answer per comparison: K proposes the next
        self.comment.clear()
        self._set_answerable(False)

    def _rate(self) -> None:
        scores = [self.scores[n].currentData() for n in ("depth", "trace", "action")]
        self.ratingSubmitted.emit(*scores, self.note.text().strip())

    def rating_saved(self) -> None:
        for box in self.scores.values():
            box.setCurrentIndex(0)
        self.note.clear()

    def _set_answerable(self, on: bool) -> None:
        for b in self.buttons.values():
            b.setEnabled(on)
