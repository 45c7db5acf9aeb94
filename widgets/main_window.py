"""The operator window: views subscribe to the session (through the bridge) and send intents back.

Layout: the control bar with the e-stop on top; the camera view with the trace editor and the depth
pair on the left; the action panel and the 3D view on the right; the status bar at the bottom.
"""
from __future__ import annotations

import collections
import time

from PySide6 import QtCore, QtGui, QtWidgets

from app.session import RunMode, Session
from widgets import gui_thread_gc, shortcuts
from widgets.action_panel import ActionPanel
from widgets.bridge import SessionBridge
from widgets.camera_view import CameraView
from widgets.cloud_view import CloudView
from widgets.controls import OVERLAYS, ControlsBar
from widgets.depth_view import DepthView
from widgets.preference_panel import PreferencePanel


ERROR_HOLD_S = 10.0


class _EstopFilter(QtCore.QObject):
    """Application-wide: Esc reaches the e-stop whatever has focus (a text box, a combo, a dialog)."""

    def __init__(self, on_estop) -> None:
        super().__init__()
        self._on_estop = on_estop

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QtCore.QEvent.Type.KeyPress, QtCore.QEvent.Type.ShortcutOverride):
            if event.key() == QtCore.Qt.Key.Key_Escape and not event.isAutoRepeat():
                if event.type() == QtCore.QEvent.Type.KeyPress:
                    self._on_estop()
                event.accept()
                return True
        return False


class _FeedbackSignals(QtCore.QObject):
    """The feedback writer's callbacks (its own thread) → the UI thread."""
    done = QtCore.Signal(str, object, object)       # kind, record id, error message
    board = QtCore.Signal(object)                   # Leaderboard
    recorder = QtCore.Signal(object)                # RecorderStatus


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, session: Session, parent=None, detach_3d: bool | None = None,
                 feedback_path: str | None = None, record_dir: str | None = None, record_fps: int = 10) -> None:
        """``detach_3d``: show the 3D view in its own window (default: when GL is software-rendered).
        ``feedback_path``: the preference store (SQLite); None turns the feedback panel off.
        ``record_dir``: record every step as LeRobot episodes there (→ save, ← re-record, Esc stops)."""
        super().__init__(parent)
        gui_thread_gc.hold()                  # the session's threads must not free Qt objects (gui_thread_gc)
        self.session = session
        self.setWindowTitle("MolmoAct steering station")
        self.bridge = SessionBridge(session, self)
        self.controls = ControlsBar()
        self.camera_view = CameraView()
        self.depth_view = DepthView()
        self.action_panel = ActionPanel()
        from widgets.cloud_view import SOFTWARE_GL_INTERVAL_S, SOFTWARE_GL_POINTS, software_gl
        # a CPU renderer draws ~20k points in ~10 ms (reference/gui.md: 90 fps), 80k in ~30 ms; and
        # rebuilds twice a second (each rebuild repaints the GL window on the CPU)
        self.cloud_view = (CloudView(max_points=SOFTWARE_GL_POINTS, min_interval_s=SOFTWARE_GL_INTERVAL_S)
                           if software_gl() else CloudView())
        self._overlay = "off"
        self._frame = None
        self._model_trace = None
        self._edited = None
        self._shown_at: collections.deque[float] = collections.deque(maxlen=90)
        self.frames_shown = 0
        self._closed = False

        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        left.addWidget(self.camera_view)
        left.addWidget(self.depth_view)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 2)
        body = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        body.addWidget(left)
        body.addWidget(self.action_panel)
        body.setStretchFactor(0, 3)
        body.setStretchFactor(1, 2)
        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.controls)
        layout.addWidget(body, 1)
        self.setCentralWidget(central)
        self.cloud_dock = self._build_cloud_dock(detach_3d)
        self.preference_panel = PreferencePanel()
        self.feedback_dock = QtWidgets.QDockWidget("Feedback", self)
        self.feedback_dock.setObjectName("feedbackDock")
        self.feedback_dock.setWidget(self.preference_panel)
        self.feedback_dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, self.feedback_dock)
        if not self.cloud_detached:
            self.tabifyDockWidget(self.cloud_dock, self.feedback_dock)
            self.cloud_dock.raise_()
        self._feedback_signals = _FeedbackSignals(self)
        self.feedback = None
        self._open_feedback(feedback_path)
        self.recorder = None
        if record_dir is not None:
            from app.recording.session_recorder import SessionRecorder
            self._feedback_signals.recorder.connect(self._on_recorder)
            self.recorder = SessionRecorder(session, record_dir, fps=record_fps,
                                            on_status=self._feedback_signals.recorder.emit)
        self.extra_views = self._build_extra_views()
        self._build_status_bar()
        self.help_dialog: shortcuts.HelpDialog | None = None
        self._shortcuts = shortcuts.bind(self)
        self._estop_filter = _EstopFilter(self.estop)
        QtWidgets.QApplication.instance().installEventFilter(self._estop_filter)
        self._connect()
        self.resize(1400, 860)
        st = session.status()
        self.controls.show_status(st.run_mode.value, st.running, st.steer_mode, st.instruction)
        self.controls.show_arm(False, session.arm is not None)
        self._on_status_snapshot(st)

    # ---------------------------------------------------------------------------- wiring
    def _open_feedback(self, path: str | None) -> None:
        from app.feedback.collect import FeedbackWriter
        sig = self._feedback_signals
        sig.done.connect(self._feedback_done)
        sig.board.connect(self.preference_panel.show_board)
        p = self.preference_panel
        p.compareRequested.connect(self.compare_pair)
        p.compareModesRequested.connect(self.compare_modes)
        self.bridge.modes.connect(self._on_modes)
        p.answered.connect(self._answer)
        p.ratingSubmitted.connect(self._rate)
        if path is None:
            p.show_message("feedback is off (no store configured: --feedback.path)")
            return
        self.feedback = FeedbackWriter(path, lambda k, i, e: sig.done.emit(k, i, e), sig.board.emit)
        if self.feedback.error is None:
            p.show_message(f"feedback store: {path}")

    def _feedback_done(self, kind: str, record_id, error) -> None:
        if error is not None:
            self.preference_panel.show_message(f"not saved: {error}", error=True)
            self._message(f"[feedback] {error}", "error")
            return
        self.preference_panel.show_message(f"saved {kind} #{record_id}")
        if kind == "rating":
            self.preference_panel.rating_saved()

    def _answer(self, value: str, comment: str) -> None:
        from app.feedback.collect import comparison
        from app.feedback.records import RecordError
        if self.feedback is None or self.preference_panel.proposal is None:
            self.preference_panel.show_message("feedback is off: nothing was saved", error=True)
            return
        try:
            record = comparison(self.preference_panel.proposal, value, self.preference_panel.operator.text(),
                                comment)
        except RecordError as e:
            self.preference_panel.show_message(str(e), error=True)
            return
        self.feedback.submit(record)

    def _rate(self, depth, trace, action, note: str) -> None:
        from app.feedback.collect import NothingToJudge, rating_subject
        from app.feedback.records import Rating, RecordError
        if self.feedback is None:
            self.preference_panel.show_message("feedback is off: nothing was saved", error=True)
            return
        try:
            image, instruction, key, cand = rating_subject(self.session, self.session.config.model_name or "model")
            record = Rating(image=image, instruction=instruction, unnorm_key=key, candidate=cand,
                            operator=self.preference_panel.operator.text() or "operator", depth_score=depth,
                            trace_score=trace, action_score=action, note=note)
        except (NothingToJudge, RecordError) as e:
            self.preference_panel.show_message(str(e), error=True)
            return
        self.feedback.submit(record)

    def compare_pair(self) -> None:
        from app.feedback.collect import NothingToJudge, propose_model_vs_edit
        try:
            p = propose_model_vs_edit(self.session, self.session.config.model_name or "model")
        except NothingToJudge as e:
            self.preference_panel.show_message(str(e), error=True)
            return
        self.feedback_dock.raise_()
        self.preference_panel.show_proposal(p)

    def compare_modes(self) -> None:
        self.preference_panel.show_message("decoding the trace both ways…")
        self.session.decode_both_modes()

    def _on_modes(self, ev) -> None:
        from app.feedback.collect import NothingToJudge, propose_two_modes
        try:
            p = propose_two_modes(self.session, ev, self.session.config.model_name or "model")
        except NothingToJudge as e:
            self.preference_panel.show_message(str(e), error=True)
            return
        self.feedback_dock.raise_()
        self.preference_panel.show_proposal(p)
        self.preference_panel.show_message("")

    def prefer_a(self) -> None:
        self.preference_panel.answer("A")

    def prefer_b(self) -> None:
        self.preference_panel.answer("B")

    def prefer_tie(self) -> None:
        self.preference_panel.answer("tie")

    def prefer_both_bad(self) -> None:
        self.preference_panel.answer("both_bad")

    def _build_cloud_dock(self, detach: bool | None) -> QtWidgets.QWidget:
        """The 3D view: in a dock under the action panel, or in a top-level window of its own when GL is
        software-rendered. A GL view anywhere inside the main window makes Qt composite the whole
        window through GL (and the flag sticks once set), which on llvmpipe drops the display from
        ~55 to ~13 fps; a separate window keeps the main window raster-painted."""
        from widgets.cloud_view import software_gl
        if detach is None:
            detach = software_gl()
        if detach:
            window = QtWidgets.QWidget(None, QtCore.Qt.WindowType.Window)
            window.setObjectName("cloudWindow")
            window.setWindowTitle("3D view: MolmoAct steering station")
            QtWidgets.QVBoxLayout(window).addWidget(self.cloud_view)
            window.resize(520, 420)
            return window
        dock = QtWidgets.QDockWidget("3D view", self)
        dock.setObjectName("cloudDock")
        dock.setWidget(self.cloud_view)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, dock)
        return dock

    def _build_extra_views(self) -> list[QtWidgets.QLabel]:
        """One small view per extra camera the model reads (a wrist camera): the image it last reasoned on."""
        views = []
        for k, cam in enumerate(self.session.extra_cameras):
            name = getattr(cam, "camera", None) or getattr(cam, "serial", None) or f"camera {k + 2}"
            label = QtWidgets.QLabel(f"{name}: no image yet")
            label.setObjectName(f"extraCameraView{k}")
            label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            label.setMinimumSize(160, 120)
            dock = QtWidgets.QDockWidget(f"{name} (model input {k + 2})", self)
            dock.setObjectName(f"extraCameraDock{k}")
            dock.setWidget(label)
            dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable)
            self.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, dock)
            views.append(label)
        return views

    def _show_extra_images(self, images) -> None:
        for label, rgb in zip(self.extra_views, images):
            h, w = rgb.shape[:2]
            image = QtGui.QImage(rgb.tobytes(), w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()
            label.setPixmap(QtGui.QPixmap.fromImage(image).scaled(
                max(label.width(), 160), max(label.height(), 120), QtCore.Qt.AspectRatioMode.KeepAspectRatio))

    @property
    def cloud_detached(self) -> bool:
        return self.cloud_dock.isWindow()

    def showEvent(self, event: QtGui.QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.camera_view.setFocus()                      # single-key shortcuts work at once, not typed away
        if self.cloud_detached and not self.cloud_dock.isVisible():
            geo = self.frameGeometry()
            screen = self.screen().availableGeometry() if self.screen() is not None else None
            w = self.cloud_dock.width()
            if screen is not None and geo.right() + w < screen.right():
                self.cloud_dock.move(geo.right() + 1, geo.top())      # beside the main window
            else:                                   # over the depth pair, clear of the controls,
                depth = self.depth_view.mapToGlobal(QtCore.QPoint(0, 0))   # action panel and status bar
                self.cloud_dock.resize(min(w, self.depth_view.width()),
                                       min(self.cloud_dock.height(), self.depth_view.height()))
                self.cloud_dock.move(depth)
            self.cloud_dock.show()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_labels: dict[str, QtWidgets.QLabel] = {}
        for key in ("rec", "camera", "arm", "model", "fps", "reason", "steer", "mode", "estop"):
            label = QtWidgets.QLabel("")
            label.setObjectName(f"status_{key}")
            self.status_labels[key] = label
            bar.addPermanentWidget(label)
        self.message = QtWidgets.QLabel("")
        self.message.setObjectName("statusMessage")
        self._messages: collections.deque[str] = collections.deque(maxlen=30)
        self._message_rank, self._message_at = 0, 0.0
        bar.addWidget(self.message, 1)
        self.status_labels["rec"].setText("REC ready" if self.recorder is not None else "")
        self._fps_timer = QtCore.QTimer(self)
        self._fps_timer.timeout.connect(self._show_fps)
        self._fps_timer.start(500)

    def _connect(self) -> None:
        b, c, s = self.bridge, self.controls, self.session
        b.frame.connect(self._on_frame)
        b.reasoning.connect(self._on_reasoning)
        b.steered.connect(self._on_steered)
        b.edited.connect(self._on_edited)
        b.action.connect(lambda ev: self.action_panel.show_step(ev.step))
        b.arm.connect(self._on_arm)
        b.estop.connect(self._on_estop)
        b.error.connect(self._on_error)
        b.status.connect(lambda ev: self._on_status_snapshot(ev.status))
        c.instructionSubmitted.connect(s.set_instruction)
        c.instructionSubmitted.connect(lambda _: self.camera_view.setFocus())
        c.runModeChanged.connect(s.set_run_mode)
        c.steerModeChanged.connect(s.set_steer_mode)
        c.playClicked.connect(self.toggle_play)
        c.stepClicked.connect(self.step)
        c.goClicked.connect(self.go)
        c.armToggled.connect(self._arm_clicked)
        c.clearEditClicked.connect(self.clear_edit)
        c.overlayChanged.connect(self._set_overlay)
        c.estopClicked.connect(self.estop)
        c.resetClicked.connect(self.reset)
        c.helpClicked.connect(self.show_help)
        v = self.camera_view
        v.sigWaypointMoved.connect(lambda i, x, y, final: s.move_waypoint(i, x, y, final))
        v.sigInsertRequested.connect(lambda x, y: s.insert_waypoint(x, y))
        v.sigDeleteRequested.connect(s.delete_waypoint)

    # ---------------------------------------------------------------------------- operator actions
    # (names match widgets.shortcuts.SHORTCUTS)
    def estop(self) -> None:
        self.session.estop("operator pressed e-stop")
        self.controls.estop.set_latched(True)      # at once, not when the event comes back
        if self.recorder is not None:               # the episode stops here; → keeps it, ← discards it
            self._message("e-stop: the episode is kept open: → to save it, ← to discard it", "error")

    def save_episode(self) -> None:
        if self.recorder is not None:
            self.recorder.save()

    def rerecord_episode(self) -> None:
        if self.recorder is not None:
            self.recorder.discard()

    def _on_recorder(self, st) -> None:
        text = (f"REC ep {st.episode_index}: {st.frames} frames" if st.recording else "REC ready") + \
            f" · {st.saved_episodes} saved"
        self.status_labels["rec"].setText(text)
        self.status_labels["rec"].setStyleSheet("color: white; background: #b00000;" if st.recording else "")
        if st.error:
            self._message(f"[recording] {st.message}", "error")
        elif st.message:
            self._message(f"[recording] {st.message}")

    def reset(self) -> None:
        self.session.reset()

    def toggle_arm(self) -> None:
        self._arm_clicked(not (self.session.arm is not None and self.session.arm.enabled))

    def _arm_clicked(self, enable: bool) -> None:
        if enable:
            self.session.enable_arm()
        else:
            self.session.disable_arm()
        self.controls.show_arm(bool(self.session.arm and self.session.arm.enabled), self.session.arm is not None)

    def step(self) -> None:
        self.session.step()

    def go(self) -> None:
        self.session.go()

    def toggle_play(self) -> None:
        self.session.toggle_play()

    def mode_step(self) -> None:
        self.session.set_run_mode(RunMode.STEP)

    def mode_preview(self) -> None:
        self.session.set_run_mode(RunMode.PREVIEW)

    def mode_confirm(self) -> None:
        self.session.set_run_mode(RunMode.CONFIRM)

    def mode_auto(self) -> None:
        self.session.set_run_mode(RunMode.AUTO)

    def toggle_steer(self) -> None:
        self.session.set_steer_mode("visual" if self.session.steer_mode == "text" else "text")

    def clear_edit(self) -> None:
        self.session.clear_edit()

    def cycle_overlay(self) -> None:
        nxt = OVERLAYS[(OVERLAYS.index(self._overlay) + 1) % len(OVERLAYS)]
        self.controls.set_overlay(nxt)

    def show_help(self) -> None:
        if self.help_dialog is None:
            self.help_dialog = shortcuts.HelpDialog(self)
        self.help_dialog.show()
        self.help_dialog.raise_()

    # ---------------------------------------------------------------------------- session events
    def _on_frame(self, ev) -> None:
        f = ev.frame
        self._frame = f
        self.camera_view.set_frame(f.rgb, ev.ee_pixel)
        self.depth_view.set_sensor_depth(f.depth)
        if self._overlay == "sensor":
            self.camera_view.set_overlay(f.depth, (0.0, self.depth_view.max_depth_m))
        if self._model_trace is None:
            self.camera_view.set_traces(None, None)
        self.cloud_view.set_frame(f)
        self.frames_shown += 1
        self._shown_at.append(time.monotonic())

    def _on_reasoning(self, ev) -> None:
        r = ev.reasoning
        self._show_extra_images(ev.extra_images)
        self._model_trace = list(r.trace)
        self._edited = self.session.edited_trace
        self.camera_view.set_traces(self._model_trace, self._edited)
        self.depth_view.set_model_depth(None if r.depth_map is None else r.depth_map.normalized)
        self._refresh_overlay()
        self.cloud_view.set_traces(self._model_trace, self._edited)
        self.camera_view.set_caption(f"{self.session.instruction}  ·  model trace (dashed) · "
                                     "your trace (solid, drag to steer)")

    def _on_steered(self, ev) -> None:
        self._show_latency("steer", ev.reasoning.timings_ms.get("total"), ev.reasoning.mode)

    def _on_edited(self, ev) -> None:
        self._edited = ev.trace
        self.camera_view.set_traces(self._model_trace, self._edited)
        if ev.final:
            self.cloud_view.set_traces(self._model_trace, self._edited)

    def _on_arm(self, ev) -> None:
        self.action_panel.show_arm(ev.state, ev.enabled)
        self.controls.show_arm(ev.enabled, True)

    def _on_estop(self, ev) -> None:
        self.controls.estop.set_latched(ev.latched)
        self.status_labels["estop"].setText("E-STOP LATCHED" if ev.latched else "")
        self.status_labels["estop"].setStyleSheet("color: white; background: #b00000; font-weight: bold;"
                                                  if ev.latched else "")
        self._message(f"e-stop latched: {ev.reason}" if ev.latched else "e-stop reset; the arm stays disabled",
                      "error" if ev.latched else "info")

    def _on_error(self, ev) -> None:
        self._message(f"[{ev.source}] {ev.message}", ev.level)

    def _on_status_snapshot(self, st) -> None:
        self.controls.show_status(st.run_mode.value, st.running, st.steer_mode, st.instruction)
        self.status_labels["camera"].setText(f"camera {st.camera}")
        live = st.camera.endswith(": streaming")
        self.camera_view.set_signal(None if live else f"NO LIVE SIGNAL ({st.camera}): last frame shown")
        self.status_labels["arm"].setText(st.arm)
        self.status_labels["model"].setText(f"model {st.model} on {st.device.upper()}")
        self.status_labels["mode"].setText(f"{st.run_mode.value}{' ▶' if st.running else ''}"
                                           f"{' (busy)' if st.busy else ''} · steer {st.steer_mode}")
        self._show_latency("reason", st.reason_ms)
        if st.steer_ms is not None:
            self._show_latency("steer", st.steer_ms)

    # ---------------------------------------------------------------------------- helpers
    def _set_overlay(self, source: str, blend: float) -> None:
        self._overlay = source
        self.camera_view.set_overlay_visible(source != "off", blend)
        self._refresh_overlay()

    def _refresh_overlay(self) -> None:
        r = self.session.reasoning
        if self._overlay == "model" and r is not None and r.depth_map is not None:
            self.camera_view.set_overlay(r.depth_map.normalized, (0.0, 1.0))
        elif self._overlay == "sensor" and self._frame is not None:
            self.camera_view.set_overlay(self._frame.depth, (0.0, self.depth_view.max_depth_m))
        else:
            self.camera_view.set_overlay(None, (0.0, 1.0))

    def _show_latency(self, key: str, ms: float | None, mode: str | None = None) -> None:
        if ms is not None:
            self.status_labels[key].setText(f"{mode or key} {ms:.0f} ms")

    def display_fps(self) -> float:
        t = self._shown_at
        if len(t) < 2 or t[-1] - t[0] <= 0:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])

    def _show_fps(self) -> None:
        self.status_labels["fps"].setText(f"display {self.display_fps():.0f} fps")

    def _message(self, text: str, level: str = "info") -> None:
        """An error stays on screen at least ERROR_HOLD_S; lesser news does not push it away. Every
        message goes into the tooltip's history (newest first)."""
        now = time.monotonic()
        self._messages.appendleft(f"{time.strftime('%H:%M:%S')} [{level}] {text}")
        self.message.setToolTip("\n".join(self._messages))
        rank = {"error": 2, "warning": 1}.get(level, 0)
        if rank < self._message_rank and now - self._message_at < ERROR_HOLD_S:
            return
        colour = {"error": "#c00000", "warning": "#a06000"}.get(level, "")
        self.message.setStyleSheet(f"color: {colour}; font-weight: bold;" if level == "error" else
                                   (f"color: {colour};" if colour else ""))
        self.message.setText(text)
        self._message_rank, self._message_at = rank, now

    # ---------------------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Stop the session (the arm first), detach views; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.removeEventFilter(self._estop_filter)
        self._fps_timer.stop()
        self.bridge.detach()
        self.session.close()
        if self.feedback is not None:
            self.feedback.close()
        if self.recorder is not None:
            self.recorder.close()                     # saves the open episode
        gui_thread_gc.release()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        if self.help_dialog is not None:
            self.help_dialog.close()
        if self.cloud_detached:
            self.cloud_dock.close()
        super().closeEvent(event)
