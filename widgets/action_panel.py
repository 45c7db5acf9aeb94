"""The action panel: what the model decided for one step, and what the arm actually got.

A view only. ``show_step`` draws an ``app.session.ActionStep``; ``show_arm`` draws the arm's measured
gripper and whether the arm is enabled; ``handle_event`` takes the session's ``ActionEvent`` /
``ArmEvent`` (call it on the GUI thread, e.g. from the Qt bridge's queued signal).

What it shows:
- a header: step index, the steering mode (``reason`` / ``steer_visual`` / ``steer_text``) as a
  coloured badge, the status as a coloured badge, and the model timings;
- a table, one row per action dimension (x, y, z, roll, pitch, yaw, gripper) and the columns
  normalized ([-1, 1]), action (un-normalized, the model's units), command (the arm's frame, after
  the action adapter), sent (after the safety guard and the arm's own limits), unit. Command and sent
  are the arm's metres / radians / 0..1 shown as mm / degrees / 0..1 (hover a cell for the exact SI
  value). Sent cells that differ from the command are amber and bold, and their tooltip lists the
  step's safety reasons. When nothing was sent the column reads "—" and the status line says why;
- the step's safety reasons;
- the measured gripper (0 open .. 1 closed) and the arm's enabled state;
- a scrolling history of the last N *sent* actions (translation in mm, rotation in degrees, gripper),
  kept in a fixed-size numpy ring buffer; refused / failed steps are not plotted as motion, only
  marked with a red cross at zero on the translation plot.

Cost: every widget is built once; an update changes item texts, one badge style when the status or
mode changes, and calls ``setData`` on the existing curves with at most N points. Indices of the
history are the session's step indices; call ``clear_history()`` when a new session starts.

Do not mutate the step here: the session's worker may still be writing it. ``show_step`` reads
each field once into a local snapshot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from app.devices.arm import ArmState
from app.session import ActionEvent, ActionStep, ArmEvent

DIM_NAMES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
N_DIMS = len(DIM_NAMES)
COLUMNS: tuple[str, ...] = ("normalized", "action", "command", "sent", "unit")
COL_NORMALIZED, COL_ACTION, COL_COMMAND, COL_SENT, COL_UNIT = range(len(COLUMNS))
DISPLAY_UNITS: tuple[str, ...] = ("mm", "mm", "mm", "deg", "deg", "deg", "0–1")
NO_VALUE = "—"

STATUS_COLORS: dict[str, str] = {
    "pending": "#ef8f00",    # amber: waits for Go
    "preview": "#546e7a",    # blue-grey: never sent
    "sent": "#2e7d32",       # green
    "refused": "#c62828",    # red
    "failed": "#c62828",     # red
    "no_arm": "#757575",     # grey
}
MODE_COLORS: dict[str, str] = {
    "reason": "#37474f",
    "steer_visual": "#6a1b9a",
    "steer_text": "#00838f",
}
UNKNOWN_COLOR = "#616161"
CLIP_BACKGROUND = "#ffc107"  # amber: the arm got something other than the command
CLIP_FOREGROUND = "#000000"
ARM_ENABLED_COLOR = "#2e7d32"
ARM_DISABLED_COLOR = "#757575"

_STATUS_WHY: dict[str, str] = {
    "pending": "waiting for Go: not sent yet",
    "preview": "preview: never sent to the arm",
    "refused": "refused by the safety guard: the arm holds",
    "failed": "the arm raised an error: the arm holds",
    "no_arm": "no arm connected: nothing sent",
}
_TRANSLATION = slice(0, 3)
_ROTATION = slice(3, 6)
_GRIPPER = 6
_CURVE_COLORS = ("#ff5252", "#69f0ae", "#448aff")   # x / roll red, y / pitch green, z / yaw blue


# ------------------------------------------------------------------------------------ formatting

def format_arm_value(dim: int, value: float | None) -> str:
    """A command / sent value (arm units: m, rad, 0..1) as the operator reads it: mm, degrees, 0..1."""
    if value is None:
        return NO_VALUE
    v = float(value)
    if not np.isfinite(v):
        return "NaN" if np.isnan(v) else ("+inf" if v > 0 else "-inf")
    if dim < 3:
        return f"{v * 1000.0:+.1f} mm"
    if dim < 6:
        return f"{np.degrees(v):+.2f}°"
    return f"{v:.2f}"


def format_arm_value_si(dim: int, value: float | None) -> str:
    """The exact value in the arm's own units (the cell tooltip)."""
    if value is None:
        return NO_VALUE
    unit = "m" if dim < 3 else ("rad" if dim < 6 else "(0 open .. 1 closed)")
    return f"{float(value):+.6f} {unit}"


def format_plain(value: float | None, digits: int) -> str:
    if value is None:
        return NO_VALUE
    v = float(value)
    if not np.isfinite(v):
        return "NaN" if np.isnan(v) else ("+inf" if v > 0 else "-inf")
    return f"{v:+.{digits}f}"


def format_timing(timing_ms: dict[str, float]) -> str:
    """``reason 812.3 ms · steer 45.1 ms`` (reason first, steer next, anything else after)."""
    keys = [k for k in ("reason", "steer") if k in timing_ms]
    keys += sorted(k for k in timing_ms if k not in ("reason", "steer"))
    parts = []
    for k in keys:
        try:
            parts.append(f"{k} {float(timing_ms[k]):.1f} ms")
        except (TypeError, ValueError):
            parts.append(f"{k} ?")
    return " · ".join(parts) if parts else NO_VALUE


def _vector(a) -> np.ndarray | None:
    if a is None:
        return None
    try:
        return np.array(a, dtype=float, copy=True).reshape(-1)
    except (TypeError, ValueError):
        return None


def _at(a: np.ndarray | None, i: int) -> float | None:
    return None if a is None or i >= len(a) else float(a[i])


@dataclass(frozen=True)
class _Snapshot:
    """The step's fields read once (the worker thread may still be mutating the step)."""
    index: int
    mode: str
    status: str
    unnorm_key: str
    normalized: np.ndarray | None
    action: np.ndarray | None
    command: np.ndarray | None
    sent: np.ndarray | None
    safety: tuple[str, ...]
    timing_ms: dict[str, float]

    @classmethod
    def of(cls, step: ActionStep) -> "_Snapshot":
        status = str(step.status)
        command, sent = _vector(step.command), _vector(step.sent)
        return cls(index=int(step.index), mode=str(step.mode), status=status,
                   unnorm_key=str(step.unnorm_key or ""), normalized=_vector(step.action_normalized),
                   action=_vector(step.action), command=command, sent=sent,
                   safety=tuple(str(s) for s in list(step.safety)), timing_ms=dict(step.timing_ms))

    @property
    def clipped_dims(self) -> list[int]:
        """Same rule as ``ActionStep.clipped_dims``, on the snapshot."""
        if self.command is None or self.sent is None:
            return []
        n = min(len(self.command), len(self.sent))
        return [i for i in range(n) if not abs(self.sent[i] - self.command[i]) <= 1e-9]


class _Ring:
    """Fixed-size ring of rows; each row is written twice (at i and i + capacity) so the last
    ``count`` rows are always one contiguous slice, oldest first, with no reordering copy."""

    def __init__(self, capacity: int, width: int) -> None:
        if capacity < 1:
            raise ValueError(f"history size must be at least 1, got {capacity}")
        self.capacity = capacity
        self._buf = np.full((2 * capacity, width), np.nan)
        self._head = 0
        self.count = 0

    def append(self, row: Sequence[float]) -> None:
        self._buf[self._head] = row
        self._buf[self._head + self.capacity] = row
        self._head = (self._head + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    def view(self) -> np.ndarray:
        """Read-only view of the rows, oldest first (valid until the next append)."""
        start = (self._head - self.count) % self.capacity
        v = self._buf[start:start + self.count]
        v.flags.writeable = False
        return v

    def last(self) -> np.ndarray | None:
        return None if self.count == 0 else self._buf[(self._head - 1) % self.capacity]

    def clear(self) -> None:
        self._buf.fill(np.nan)
        self._head = 0
        self.count = 0


def _badge_style(name: str, color: str) -> str:
    return (f"QLabel#{name} {{ background-color: {color}; color: white; font-weight: bold; "
            "border-radius: 4px; padding: 2px 8px; }")


# ----------------------------------------------------------------------------------------- panel

class ActionPanel(QtWidgets.QWidget):
    """The model's action for one step, what the arm got, and the history of what was sent."""

    def __init__(self, parent: QtWidgets.QWidget | None = None, history_size: int = 200) -> None:
        super().__init__(parent)
        self.setObjectName("actionPanel")
        self._history = _Ring(int(history_size), 1 + N_DIMS)   # [step index, 7 sent values (SI)]
        self._refused = _Ring(int(history_size), 1)            # step indices of refused / failed steps
        self._snapshot: _Snapshot | None = None
        self._status = ""
        self._status_color = UNKNOWN_COLOR
        self._mode = ""
        self._mode_color = UNKNOWN_COLOR
        self._arm_color = ""

        fixed = QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont)
        self._cell_font = QtGui.QFont(fixed)
        self._cell_font_bold = QtGui.QFont(fixed)
        self._cell_font_bold.setBold(True)

        # header: step, mode badge, status badge, timing
        self.step_label = QtWidgets.QLabel("no step yet")
        self.step_label.setObjectName("stepLabel")
        f = self.step_label.font()
        f.setBold(True)
        self.step_label.setFont(f)
        self.mode_badge = QtWidgets.QLabel(NO_VALUE)
        self.mode_badge.setObjectName("modeBadge")
        self.mode_badge.setToolTip("which call produced this action: reason (the model alone), "
                                   "steer_visual (edited trace drawn on the image), "
                                   "steer_text (edited trace forced into the text)")
        self.status_badge = QtWidgets.QLabel(NO_VALUE)
        self.status_badge.setObjectName("statusBadge")
        self.timing_label = QtWidgets.QLabel(NO_VALUE)
        self.timing_label.setObjectName("timingLabel")
        self.timing_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight
                                       | QtCore.Qt.AlignmentFlag.AlignVCenter)
        self._set_badge(self.mode_badge, NO_VALUE, UNKNOWN_COLOR)
        self._set_badge(self.status_badge, NO_VALUE, UNKNOWN_COLOR)
        header = QtWidgets.QHBoxLayout()
        header.setSpacing(6)
        header.addWidget(self.step_label)
        header.addWidget(self.mode_badge)
        header.addWidget(self.status_badge)
        header.addStretch(1)
        header.addWidget(self.timing_label)

        self.detail_label = QtWidgets.QLabel("")
        self.detail_label.setObjectName("statusDetail")
        self.detail_label.setWordWrap(True)
        self.key_label = QtWidgets.QLabel("")
        self.key_label.setObjectName("unnormKey")
        self.key_label.setStyleSheet("color: gray;")
        self.key_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight
                                    | QtCore.Qt.AlignmentFlag.AlignTop)
        detail = QtWidgets.QHBoxLayout()
        detail.addWidget(self.detail_label, 1)
        detail.addWidget(self.key_label)

        # the table
        self.table = self._build_table()

        # safety reasons
        self.safety_list = QtWidgets.QListWidget()
        self.safety_list.setObjectName("safetyList")
        self.safety_list.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.safety_list.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.safety_list.setWordWrap(True)
        self.safety_list.setMaximumHeight(4 * self.fontMetrics().height() + 10)
        self._set_safety_items([])

        # arm: enabled state and measured gripper
        self.arm_label = QtWidgets.QLabel(NO_VALUE)
        self.arm_label.setObjectName("armBadge")
        self._set_badge(self.arm_label, "arm: no state", UNKNOWN_COLOR)
        self.gripper_label = QtWidgets.QLabel("gripper " + NO_VALUE)
        self.gripper_label.setObjectName("gripperLabel")
        self.gripper_label.setToolTip("measured gripper: 0 open .. 1 closed")
        self.gripper_bar = QtWidgets.QProgressBar()
        self.gripper_bar.setObjectName("gripperBar")
        self.gripper_bar.setRange(0, 1000)
        self.gripper_bar.setValue(0)
        self.gripper_bar.setTextVisible(True)
        self.gripper_bar.setFormat(NO_VALUE)
        self.gripper_bar.setToolTip("measured gripper: 0 open .. 1 closed")
        self.gripper_bar.setEnabled(False)
        arm_row = QtWidgets.QHBoxLayout()
        arm_row.addWidget(self.arm_label)
        arm_row.addWidget(self.gripper_label)
        for text, stretch in (("0 open", 0), (None, 1), ("1 closed", 0)):
            if text is None:
                arm_row.addWidget(self.gripper_bar, stretch)
                continue
            scale = QtWidgets.QLabel(text)
            scale.setStyleSheet("color: gray;")
            arm_row.addWidget(scale)

        # history plot
        self.plot = self._build_plot()

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addLayout(detail)
        layout.addWidget(self.table)
        safety_title = QtWidgets.QLabel("Safety")
        safety_title.setStyleSheet("font-weight: bold;")
        layout.addWidget(safety_title)
        layout.addWidget(self.safety_list)
        layout.addLayout(arm_row)
        layout.addWidget(self.plot, 1)

    # ------------------------------------------------------------------------------ construction
    def _build_table(self) -> QtWidgets.QTableWidget:
        t = QtWidgets.QTableWidget(N_DIMS, len(COLUMNS))
        t.setObjectName("actionTable")
        t.setHorizontalHeaderLabels(list(COLUMNS))
        t.setVerticalHeaderLabels(list(DIM_NAMES))
        tips = ("the model's action in [-1, 1]", "un-normalized with the step's unnorm key (the model's units)",
                "in the arm's frame after the action adapter", "what the arm actually got "
                "(safety guard, then the arm's own limits); amber = differs from the command",
                "unit of command and sent (the arm's m / rad shown as mm / deg)")
        for c, tip in enumerate(tips):
            t.horizontalHeaderItem(c).setToolTip(tip)
        t.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        t.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        t.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        t.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        t.setWordWrap(False)
        row_h = QtGui.QFontMetrics(self._cell_font).height() + 6
        vh = t.verticalHeader()
        vh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(row_h)
        hh = t.horizontalHeader()
        for c in range(len(COLUMNS)):
            hh.setSectionResizeMode(c, QtWidgets.QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(COL_UNIT, QtWidgets.QHeaderView.ResizeMode.Fixed)
        hh.resizeSection(COL_UNIT, QtGui.QFontMetrics(self._cell_font).horizontalAdvance("unit") + 24)
        right = QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
        for r in range(N_DIMS):
            for c in range(len(COLUMNS)):
                item = QtWidgets.QTableWidgetItem(NO_VALUE)
                item.setFont(self._cell_font)
                item.setTextAlignment(right if c != COL_UNIT else QtCore.Qt.AlignmentFlag.AlignCenter)
                t.setItem(r, c, item)
            t.item(r, COL_UNIT).setText(DISPLAY_UNITS[r])
        t.item(_GRIPPER, COL_UNIT).setToolTip("0 open .. 1 closed")
        height = hh.sizeHint().height() + N_DIMS * row_h + 2 * t.frameWidth() + 2
        t.setFixedHeight(height)
        t.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
        return t

    def _build_plot(self) -> pg.GraphicsLayoutWidget:
        glw = pg.GraphicsLayoutWidget()
        glw.setObjectName("historyPlot")
        glw.setMinimumHeight(200)
        glw.ci.setSpacing(0)
        glw.ci.setContentsMargins(2, 2, 2, 2)
        self.translation_plot = glw.addPlot(row=0, col=0)
        self.rotation_plot = glw.addPlot(row=1, col=0)
        self.gripper_plot = glw.addPlot(row=2, col=0)
        glw.ci.layout.setRowStretchFactor(0, 2)
        glw.ci.layout.setRowStretchFactor(1, 2)
        glw.ci.layout.setRowStretchFactor(2, 1)
        for p, label in ((self.translation_plot, "mm"), (self.rotation_plot, "deg"),
                         (self.gripper_plot, "grip")):
            p.setMenuEnabled(False)
            p.setMouseEnabled(x=False, y=False)
            p.hideButtons()
            p.showGrid(x=True, y=True, alpha=0.25)
            p.setLabel("left", label)
            p.getAxis("left").setWidth(44)
            p.getAxis("left").enableAutoSIPrefix(False)
            p.getAxis("bottom").enableAutoSIPrefix(False)
            p.setDefaultPadding(0.02)
        self.translation_plot.setTitle("sent actions (last %d)" % self._history.capacity, size="9pt")
        self.rotation_plot.setXLink(self.translation_plot)
        self.gripper_plot.setXLink(self.translation_plot)
        self.translation_plot.getAxis("bottom").setStyle(showValues=False)
        self.rotation_plot.getAxis("bottom").setStyle(showValues=False)
        self.gripper_plot.setLabel("bottom", "step")
        self.gripper_plot.setYRange(0.0, 1.0, padding=0.05)
        self.gripper_plot.enableAutoRange(axis="y", enable=False)

        legend_brush = pg.mkBrush(0, 0, 0, 170)
        self.translation_plot.addLegend(offset=(4, 2), colCount=4, labelTextSize="7pt", brush=legend_brush)
        self.rotation_plot.addLegend(offset=(4, 2), colCount=3, labelTextSize="7pt", brush=legend_brush)
        self.curves: dict[str, pg.PlotDataItem] = {}
        for i, name in enumerate(DIM_NAMES):
            if i < 3:
                plot, color = self.translation_plot, _CURVE_COLORS[i]
            elif i < 6:
                plot, color = self.rotation_plot, _CURVE_COLORS[i - 3]
            else:
                plot, color = self.gripper_plot, "#ffd740"
            curve = pg.PlotDataItem(pen=pg.mkPen(color, width=1.5), name=name, autoDownsample=False)
            plot.addItem(curve)
            self.curves[name] = curve
        self.refused_markers = pg.ScatterPlotItem(symbol="x", size=9, pen=pg.mkPen("#ff1744", width=2),
                                                  brush=pg.mkBrush("#ff1744"), name="refused")
        self.translation_plot.addItem(self.refused_markers)       # named: the legend lists it
        return glw

    # ------------------------------------------------------------------------------ updates
    def handle_event(self, event: object) -> None:
        """Dispatch a session event this panel draws (others are ignored). GUI thread only."""
        if isinstance(event, ActionEvent):
            self.show_step(event.step)
        elif isinstance(event, ArmEvent):
            self.show_arm(event.state, event.enabled)

    def show_step(self, step: ActionStep) -> None:
        """Draw one step. A step is often shown twice (pending, then sent / refused): the history
        records it once."""
        s = _Snapshot.of(step)
        self._snapshot = s
        self._update_header(s)
        self._update_table(s)
        self._set_safety_items(list(s.safety), refused=s.status in ("refused", "failed"))
        self._record_history(s)

    def show_arm(self, state: ArmState | None, enabled: bool) -> None:
        """The measured gripper (0 open .. 1 closed) and whether the arm is enabled."""
        if enabled:
            self._set_badge(self.arm_label, "arm enabled", ARM_ENABLED_COLOR)
        else:
            self._set_badge(self.arm_label, "arm disabled", ARM_DISABLED_COLOR)
        self._arm_color = ARM_ENABLED_COLOR if enabled else ARM_DISABLED_COLOR
        g = None if state is None else float(state.gripper)
        if g is None or not np.isfinite(g):
            self.gripper_label.setText("gripper " + NO_VALUE)
            self.gripper_bar.setValue(0)
            self.gripper_bar.setFormat(NO_VALUE)
            self.gripper_bar.setEnabled(False)
            return
        word = "open" if g < 0.05 else ("closed" if g > 0.95 else "")
        self.gripper_label.setText(f"gripper {g:.2f}" + (f" ({word})" if word else ""))
        self.gripper_bar.setEnabled(True)
        self.gripper_bar.setValue(int(round(min(max(g, 0.0), 1.0) * 1000)))
        self.gripper_bar.setFormat(f"{g:.2f}")

    def clear_history(self) -> None:
        """Forget the plotted history (e.g. when a new session starts its step indices again)."""
        self._history.clear()
        self._refused.clear()
        self._update_plot()
        self._update_refused_markers()

    # ------------------------------------------------------------------------------ internals
    def _set_badge(self, label: QtWidgets.QLabel, text: str, color: str) -> None:
        if label.text() != text:
            label.setText(text)
        if label.property("badgeColor") != color:
            label.setProperty("badgeColor", color)
            label.setStyleSheet(_badge_style(label.objectName(), color))

    def _update_header(self, s: _Snapshot) -> None:
        self.step_label.setText(f"step #{s.index}")
        self._mode, self._mode_color = s.mode, MODE_COLORS.get(s.mode, UNKNOWN_COLOR)
        self._set_badge(self.mode_badge, s.mode or NO_VALUE, self._mode_color)
        self._status, self._status_color = s.status, STATUS_COLORS.get(s.status, UNKNOWN_COLOR)
        self._set_badge(self.status_badge, s.status or NO_VALUE, self._status_color)
        self.timing_label.setText(format_timing(s.timing_ms))
        self.key_label.setText(f"unnorm key: {s.unnorm_key}" if s.unnorm_key else "")
        self.detail_label.setText(self._detail(s))
        self.detail_label.setStyleSheet(f"color: {self._status_color};")

    def _detail(self, s: _Snapshot) -> str:
        if s.status == "sent":
            if s.sent is None:
                return "sent, but the arm reported no values"
            clipped = s.clipped_dims
            if clipped:
                return "sent, clipped on " + ", ".join(DIM_NAMES[i] for i in clipped if i < N_DIMS)
            return "sent as commanded"
        why = _STATUS_WHY.get(s.status, f"status {s.status}: nothing sent")
        if s.status == "failed" and any(r.startswith("arm:") for r in s.safety):
            why += f" ({[r for r in s.safety if r.startswith('arm:')][-1]})"     # the arm's own error
        elif s.status in ("refused", "failed") and s.safety:
            why += f" ({s.safety[0]})"
        elif s.command is None and any(r.startswith("adapter:") for r in s.safety):
            why += "; no command: " + next(r for r in s.safety if r.startswith("adapter:"))
        return why

    def _update_table(self, s: _Snapshot) -> None:
        t = self.table
        clipped = set(s.clipped_dims)
        reasons = "\n".join(f"• {r}" for r in s.safety) or "• (no reason reported)"
        why = self._detail(s)
        t.setUpdatesEnabled(False)
        try:
            for r in range(N_DIMS):
                t.item(r, COL_NORMALIZED).setText(format_plain(_at(s.normalized, r), 3))
                t.item(r, COL_ACTION).setText(format_plain(_at(s.action, r), 4))
                cmd = _at(s.command, r)
                cmd_item = t.item(r, COL_COMMAND)
                cmd_item.setText(format_arm_value(r, cmd))
                cmd_item.setToolTip("" if cmd is None else format_arm_value_si(r, cmd))
                sent = _at(s.sent, r)
                item = t.item(r, COL_SENT)
                item.setText(format_arm_value(r, sent))
                if r in clipped:
                    item.setBackground(QtGui.QBrush(QtGui.QColor(CLIP_BACKGROUND)))
                    item.setForeground(QtGui.QBrush(QtGui.QColor(CLIP_FOREGROUND)))
                    item.setFont(self._cell_font_bold)
                    item.setToolTip(f"{DIM_NAMES[r]} clipped: command {format_arm_value(r, cmd)} → sent "
                                    f"{format_arm_value(r, sent)} ({format_arm_value_si(r, sent)})\n"
                                    f"safety:\n{reasons}")
                else:
                    item.setBackground(QtGui.QBrush())
                    item.setForeground(QtGui.QBrush())
                    item.setFont(self._cell_font)
                    item.setToolTip(why if sent is None else format_arm_value_si(r, sent))
        finally:
            t.setUpdatesEnabled(True)

    def _set_safety_items(self, reasons: list[str], refused: bool = False) -> None:
        lst = self.safety_list
        lst.clear()
        if not reasons:
            item = QtWidgets.QListWidgetItem("no safety events")
            item.setForeground(QtGui.QBrush(QtGui.QColor("gray")))
            lst.addItem(item)
            return
        color = QtGui.QColor(STATUS_COLORS["refused"] if refused else "#b26a00")
        for reason in reasons:
            item = QtWidgets.QListWidgetItem(reason)
            item.setForeground(QtGui.QBrush(color))
            item.setToolTip(reason)
            lst.addItem(item)

    def _record_history(self, s: _Snapshot) -> None:
        if s.status == "sent" and s.sent is not None:
            last = self._history.last()
            if last is not None and int(last[0]) == s.index:
                return                                  # the same step shown again
            row = np.full(1 + N_DIMS, np.nan)
            row[0] = s.index
            n = min(len(s.sent), N_DIMS)
            row[1:1 + n] = s.sent[:n]
            self._history.append(row)
            self._update_plot()
        elif s.status in ("refused", "failed"):
            last = self._refused.last()
            if last is not None and int(last[0]) == s.index:
                return
            self._refused.append((s.index,))
            self._update_refused_markers()

    def _update_plot(self) -> None:
        v = self._history.view()
        x = v[:, 0].copy()
        trans = v[:, 1:4] * 1000.0
        rot = np.degrees(v[:, 4:7])
        for i in range(3):
            self.curves[DIM_NAMES[i]].setData(x, trans[:, i])
            self.curves[DIM_NAMES[3 + i]].setData(x, rot[:, i])
        self.curves["gripper"].setData(x, v[:, 7].copy())

    def _update_refused_markers(self) -> None:
        x = self._refused.view()[:, 0].copy()
        self.refused_markers.setData(x=x, y=np.zeros_like(x))

    # ------------------------------------------------------------------------------ queries (tests, window)
    def mode_text(self) -> str:
        """The steering-mode badge's text (``reason`` / ``steer_visual`` / ``steer_text``)."""
        return self.mode_badge.text()

    def mode_color(self) -> str:
        return self._mode_color

    def status_text(self) -> str:
        """The status badge's text (``pending`` / ``preview`` / ``sent`` / ``refused`` / ...)."""
        return self.status_badge.text()

    def status_detail_text(self) -> str:
        """The line under the header: why nothing was sent, or what was clipped."""
        return self.detail_label.text()

    def status_color(self) -> str:
        """The status badge's colour, ``#rrggbb``."""
        return self._status_color

    def timing_text(self) -> str:
        return self.timing_label.text()

    def step_text(self) -> str:
        return self.step_label.text()

    def cell(self, dim: int | str, column: int | str) -> QtWidgets.QTableWidgetItem:
        r = DIM_NAMES.index(dim) if isinstance(dim, str) else int(dim)
        c = COLUMNS.index(column) if isinstance(column, str) else int(column)
        return self.table.item(r, c)

    def sent_cell(self, dim: int | str) -> QtWidgets.QTableWidgetItem:
        return self.cell(dim, COL_SENT)

    def is_highlighted(self, dim: int | str) -> bool:
        """Whether the sent cell is marked as clipped."""
        item = self.sent_cell(dim)
        return item.background().style() != QtCore.Qt.BrushStyle.NoBrush and item.font().bold()

    def safety_reasons(self) -> list[str]:
        return [] if self._snapshot is None else list(self._snapshot.safety)

    def gripper_text(self) -> str:
        return self.gripper_label.text()

    def gripper_value(self) -> float | None:
        """The bar's value in 0..1, or None when no state is shown."""
        return self.gripper_bar.value() / 1000.0 if self.gripper_bar.isEnabled() else None

    def arm_text(self) -> str:
        return self.arm_label.text()

    def history_length(self) -> int:
        return self._history.count

    @property
    def history_size(self) -> int:
        return self._history.capacity

    def history(self) -> tuple[np.ndarray, np.ndarray]:
        """(step indices, sent actions in arm units (n, 7)), oldest first; copies."""
        v = self._history.view()
        return v[:, 0].astype(int), v[:, 1:].copy()

    def refused_steps(self) -> list[int]:
        """Indices of refused / failed steps marked on the history plot, oldest first."""
        return [int(i) for i in self._refused.view()[:, 0]]


__all__ = ["ActionPanel", "COLUMNS", "DIM_NAMES", "DISPLAY_UNITS", "MODE_COLORS", "NO_VALUE", "STATUS_COLORS",
           "format_arm_value", "format_timing"]
