"""The README's pictures: the window on the embedded default after Step, a drag (steer_text) and Go;
with ``--feedback``, then a comparison (K) answered B, with the Feedback tab raised.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py docs/window.png
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py docs/feedback.png --feedback
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pump(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def main(out: str, feedback: bool = False) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    from widgets.app import prepare_gl
    prepare_gl(uses_sim=True)
    from PySide6 import QtCore, QtWidgets
    QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    app = QtWidgets.QApplication([])
    from app.config import StationConfig
    from app.station import open_session
    from widgets.app import configure_pyqtgraph
    configure_pyqtgraph()
    from widgets.main_window import MainWindow

    session = open_session(StationConfig())
    import tempfile
    db = str(Path(tempfile.mkdtemp()) / "feedback.sqlite")
    win = MainWindow(session, detach_3d=False, feedback_path=db)     # docked, as on a machine with a GPU
    win.resize(1500, 900)
    win.show()
    session.start()
    pump(app, 1.0)
    session.step()
    session.wait_idle(60)
    pump(app, 0.5)
    trace = session.current_trace
    x, y = trace[-1]
    session.edit_trace([*trace, (min(255, x + 60), max(0, y - 40))], final=True)
    session.wait_idle(60)
    session.enable_arm()
    session.wait_idle(60)
    session.go()
    session.wait_idle(60)
    pump(app, 1.5)
    if feedback:
        win.compare_pair()
        pump(app, 0.5)
        win.prefer_b()
        pump(app, 2.0)
    ok = win.grab().save(out)
    win.close()
    print(f"{'wrote' if ok else 'could not write'} {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sys.exit(main(args[0] if args else "docs/window.png", "--feedback" in sys.argv))
