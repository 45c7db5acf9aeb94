"""The README's picture: the window on the embedded default after Step, a drag (steer_text) and Go.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py docs/window.png
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


def main(out: str) -> int:
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
    win = MainWindow(session, detach_3d=False)     # docked, as on a machine with a GPU
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
    ok = win.grab().save(out)
    win.close()
    print(f"{'wrote' if ok else 'could not write'} {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/window.png"))
