"""Replay a recorded dataset: pick an episode, scrub its frames, see what the model reasoned (its trace,
dashed) against what was acted on (the operator's trace, solid), the depth, and what the arm got."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from app.recording.reader import EpisodeReader, RecordedFrame
from widgets.camera_view import CameraView
from widgets.depth_view import DepthView

DIMS = ("x", "y", "z", "roll", "pitch", "yaw", "grip")


def _vec(a) -> str:
    return "  ".join(f"{n} {float(v):+.3f}" for n, v in zip(DIMS, np.asarray(a, float)))


class ReplayWindow(QtWidgets.QMainWindow):
    def __init__(self, root: str | Path, parent=None) -> None:
        super().__init__(parent)
        self.reader = EpisodeReader(root)
        self.setWindowTitle(f"Replay: {root}")
        self.camera_view = CameraView()
        self.camera_view.edit_trace.editable = False
        self.depth_view = DepthView()
        self.episode = QtWidgets.QComboBox()
        self.episode.setObjectName("episode")
        for ep in self.reader.episodes():
            self.episode.addItem(f"episode {ep.episode_index}: {ep.length} frames, {', '.join(ep.tasks)}",
                                 ep.episode_index)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setObjectName("frameSlider")
        self.play = QtWidgets.QPushButton("Play (Space)")
        self.play.setCheckable(True)
        self.position = QtWidgets.QLabel("")
        self.details = QtWidgets.QLabel("")
        self.details.setObjectName("replayDetails")
        self.details.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop)
        self.details.setWordWrap(True)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.episode, 1)
        top.addWidget(self.play)
        top.addWidget(self.slider, 2)
        top.addWidget(self.position)
        views = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        left.addWidget(self.camera_view)
        left.addWidget(self.depth_view)
        views.addWidget(left)
        views.addWidget(self.details)
        views.setStretchFactor(0, 3)
        views.setStretchFactor(1, 1)
        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.addLayout(top)
        layout.addWidget(views, 1)
        self.setCentralWidget(central)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self._advance)
        self.play.toggled.connect(lambda on: self.timer.start(int(1000 / max(1, self.reader.fps))) if on
                                  else self.timer.stop())
        self.episode.currentIndexChanged.connect(lambda _: self._open_episode())
        self.slider.valueChanged.connect(self.show_frame)
        for key, fn in (("Space", self.play.toggle), ("Right", lambda: self.slider.setValue(self.slider.value() + 1)),
                        ("Left", lambda: self.slider.setValue(self.slider.value() - 1))):
            QtGui.QShortcut(QtGui.QKeySequence(key), self, activated=fn)
        self.current: RecordedFrame | None = None
        self.resize(1300, 820)
        if self.episode.count():
            self._open_episode()
        else:
            self.details.setText("this dataset has no episodes")

    def _open_episode(self) -> None:
        ep = self.episode.currentData()
        n = self.reader.num_frames(ep)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.show_frame(0)

    def _advance(self) -> None:
        if self.slider.value() >= self.slider.maximum():
            self.play.setChecked(False)
        else:
            self.slider.setValue(self.slider.value() + 1)

    def show_frame(self, index: int) -> None:
        ep = self.episode.currentData()
        if ep is None:
            return
        f = self.reader.frame(ep, int(index))
        self.current = f
        self.camera_view.set_frame(f.rgb)
        self.camera_view.set_traces(f.model_trace or None, f.trace if f.intervention else None)
        self.camera_view.set_caption(f"{f.instruction}  ·  {f.mode}{'  ·  operator edit' if f.intervention else ''}")
        if f.depth is not None:
            self.depth_view.set_sensor_depth(f.depth)
        self.position.setText(f"frame {f.frame_index + 1}/{self.slider.maximum() + 1}  t={f.timestamp:.2f}s")
        sent = _vec(f.action) if f.sent else "nothing sent"
        reasons = "\n".join(f"  • {r}" for r in f.safety_reasons) or "  (none)"
        self.details.setText(
            f"<b>{f.mode}</b> · status {f.status or '?'} · {'edited by the operator' if f.intervention else 'model trace'}"
            f"<br><br><b>model action</b><br>{_vec(f.model_action)}<br><br><b>sent</b><br>{sent}"
            f"<br><br><b>trace</b> {f.trace}<br><b>model trace</b> {f.model_trace}"
            f"<br><b>depth codes</b> {len(f.depth_codes)}<br><br><b>safety</b><br>{reasons.replace(chr(10), '<br>')}")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.timer.stop()
        self.reader.close()
        super().closeEvent(event)


def run(root: str) -> int:
    import sys
    from app.recording.store import RecordingError
    from widgets.app import configure_pyqtgraph
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    configure_pyqtgraph()
    try:
        win = ReplayWindow(root)
    except (RecordingError, OSError) as e:
        print(f"error: cannot open the recording: {e}", file=sys.stderr)
        return 2
    win.show()
    return int(app.exec())
