"""The control bar: instruction, run and steering modes, arm, and the e-stop that never scrolls away.

Widgets only: each control emits a signal; the main window connects them to the session.
"""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from app.session import STEER_MODES, RunMode

OVERLAYS = ("off", "model", "sensor")
STEER_LABELS = {"text": "text (steer_text, fast)", "visual": "visual (steer_visual)"}


class EstopButton(QtWidgets.QPushButton):
    def __init__(self, parent=None) -> None:
        super().__init__("E-STOP\n(Esc)", parent)
        self.setObjectName("estopButton")
        self.setMinimumSize(120, 64)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Fixed, QtWidgets.QSizePolicy.Policy.Expanding)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.set_latched(False)

    def set_latched(self, latched: bool) -> None:
        self.setText("E-STOP\nLATCHED" if latched else "E-STOP\n(Esc)")
        colour = "#7a0000" if latched else "#d00000"
        self.setStyleSheet(f"QPushButton#estopButton {{ background: {colour}; color: white; font-weight: bold;"
                           " font-size: 16px; border: 3px solid #300; border-radius: 8px; }")


class ControlsBar(QtWidgets.QWidget):
    instructionSubmitted = QtCore.Signal(str)
    runModeChanged = QtCore.Signal(str)
    steerModeChanged = QtCore.Signal(str)
    playClicked = QtCore.Signal()
    stepClicked = QtCore.Signal()
    goClicked = QtCore.Signal()
    armToggled = QtCore.Signal(bool)
    clearEditClicked = QtCore.Signal()
    overlayChanged = QtCore.Signal(str, float)
    estopClicked = QtCore.Signal()
    resetClicked = QtCore.Signal()
    helpClicked = QtCore.Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.instruction = QtWidgets.QLineEdit()
        self.instruction.setObjectName("instruction")
        self.instruction.setPlaceholderText("instruction, e.g. pick up the red cube (Enter applies)")
        self.instruction.returnPressed.connect(lambda: self.instructionSubmitted.emit(self.instruction.text()))
        self.run_mode = QtWidgets.QComboBox()
        self.run_mode.setObjectName("runMode")
        for i, m in enumerate(RunMode):
            self.run_mode.addItem(f"{i + 1} {m.value}", m.value)
        self.run_mode.activated.connect(lambda _: self.runModeChanged.emit(self.run_mode.currentData()))
        self.steer_mode = QtWidgets.QComboBox()
        self.steer_mode.setObjectName("steerMode")
        for m in STEER_MODES:
            self.steer_mode.addItem(STEER_LABELS[m], m)
        self.steer_mode.activated.connect(lambda _: self.steerModeChanged.emit(self.steer_mode.currentData()))
        self.play = self._button("Play (P)", self.playClicked, "play")
        self.step = self._button("Step (S)", self.stepClicked, "step")
        self.go = self._button("Go (G)", self.goClicked, "go")
        self.go.setToolTip("Send the action on screen through the safety guard to the arm")
        self.clear = self._button("Clear edit (C)", self.clearEditClicked, "clearEdit")
        self.arm = QtWidgets.QPushButton("Arm disabled (Ctrl+E)")
        self.arm.setObjectName("armToggle")
        self.arm.setCheckable(True)
        self.arm.clicked.connect(lambda checked: self.armToggled.emit(bool(checked)))
        self.reset = self._button("Reset e-stop (Ctrl+R)", self.resetClicked, "reset")
        self.help = self._button("Keys (F1)", self.helpClicked, "help")
        self.overlay = QtWidgets.QComboBox()
        self.overlay.setObjectName("overlay")
        for o in OVERLAYS:
            self.overlay.addItem(f"overlay: {o}", o)
        self.blend = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.blend.setObjectName("blend")
        self.blend.setRange(0, 100)
        self.blend.setValue(50)
        self.blend.setFixedWidth(90)
        self.overlay.activated.connect(lambda _: self._overlay())
        self.blend.valueChanged.connect(lambda _: self._overlay())
        self.estop = EstopButton()
        self.estop.clicked.connect(self.estopClicked)

        row1 = QtWidgets.QHBoxLayout()
        row1.addWidget(QtWidgets.QLabel("Instruction"))
        row1.addWidget(self.instruction, 1)
        row1.addWidget(QtWidgets.QLabel("Run"))
        row1.addWidget(self.run_mode)
        for w in (self.play, self.step, self.go):
            row1.addWidget(w)
        row2 = QtWidgets.QHBoxLayout()
        row2.addWidget(QtWidgets.QLabel("Steer"))
        row2.addWidget(self.steer_mode)
        row2.addWidget(self.clear)
        row2.addWidget(self.overlay)
        row2.addWidget(self.blend)
        row2.addStretch(1)
        for w in (self.arm, self.reset, self.help):
            row2.addWidget(w)
        rows = QtWidgets.QVBoxLayout()
        rows.addLayout(row1)
        rows.addLayout(row2)
        outer = QtWidgets.QHBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.addLayout(rows, 1)
        outer.addWidget(self.estop)

    def _button(self, text: str, signal, name: str) -> QtWidgets.QPushButton:
        b = QtWidgets.QPushButton(text)
        b.setObjectName(name)
        b.clicked.connect(signal)
        return b

    def _overlay(self) -> None:
        self.overlayChanged.emit(self.overlay.currentData(), self.blend.value() / 100.0)

    # ---------------------------------------------------------------------------- session state in
    def show_status(self, run_mode: str, running: bool, steer_mode: str, instruction: str) -> None:
        self.run_mode.setCurrentIndex(max(0, self.run_mode.findData(run_mode)))
        self.steer_mode.setCurrentIndex(max(0, self.steer_mode.findData(steer_mode)))
        self.play.setText("Pause (P)" if running else ("Play (P)" if run_mode != "step" else "Play = step"))
        if not self.instruction.hasFocus() and self.instruction.text() != instruction:
            self.instruction.setText(instruction)

    def show_arm(self, enabled: bool, available: bool) -> None:
        self.arm.setEnabled(available)
        self.arm.setChecked(enabled)
        self.arm.setText(("ARM ENABLED" if enabled else "Arm disabled") + " (Ctrl+E)" if available else "no arm")
        self.arm.setStyleSheet("QPushButton#armToggle:checked { background: #1a7f37; color: white; "
                               "font-weight: bold; }")

    def set_overlay(self, source: str) -> None:
        self.overlay.setCurrentIndex(max(0, self.overlay.findData(source)))
        self._overlay()
