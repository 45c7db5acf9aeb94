"""Start the operator window on a configured station (``python main.py``)."""
from __future__ import annotations

import signal
import sys

from app.config import StationConfig
from app.safety import SafetyConfig
from app.session import SessionConfig


def prepare_gl(uses_sim: bool) -> None:
    """Before the QApplication exists: one OpenGL binding for the whole process.

    PyOpenGL binds to one platform per process. The simulator renders through EGL (``app.sim.gl``
    sets ``PYOPENGL_PLATFORM=egl``), so on X11 Qt must create its GL contexts through EGL too
    (``QT_XCB_GL_INTEGRATION=xcb_egl``), or the 3D view's draw calls look for a GLX context that
    PyOpenGL cannot see. Without the sim nothing changes (GLX, Qt's default).
    """
    import os
    if uses_sim:
        import app.sim.gl  # noqa: F401  (chooses MuJoCo's backend and PyOpenGL's platform)
    if os.environ.get("PYOPENGL_PLATFORM") == "egl":
        os.environ.setdefault("QT_XCB_GL_INTEGRATION", "xcb_egl")


def configure_pyqtgraph() -> None:
    import pyqtgraph as pg
    # numpy (H, W, 3) images upright; no mouse-move rate limit (drags stay exact; reference/gui.md)
    pg.setConfigOptions(imageAxisOrder="row-major", mouseRateLimit=-1, antialias=False)


def run(station: StationConfig, session_cfg: SessionConfig, safety: SafetyConfig | None = None,
        record_dir: str | None = None, record_fps: int = 10) -> int:
    from PySide6 import QtCore, QtWidgets

    from app.station import StationError, open_session

    prepare_gl(station.camera.type == "sim")
    if QtWidgets.QApplication.instance() is None:
        # one GL context family for every GL widget (the 3D view survives being re-parented)
        QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    configure_pyqtgraph()
    from widgets.main_window import MainWindow
    try:
        session = open_session(station, session_cfg, safety)
    except StationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    window = MainWindow(session, feedback_path=station.feedback.path, record_dir=record_dir, record_fps=record_fps)
    window.preference_panel.operator.setText(station.feedback.operator)
    window.show()
    session.start()

    # SIGINT/SIGTERM close the window the normal way (arm stopped, devices released). Qt's loop does
    # not run Python code on its own, so a timer lets the interpreter see the signal.
    def close(*_):
        window.close()

    previous = {sig: signal.signal(sig, close) for sig in (signal.SIGINT, signal.SIGTERM)}
    wake = QtCore.QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    try:
        rc = app.exec()
    finally:
        wake.stop()
        window.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return int(rc)
