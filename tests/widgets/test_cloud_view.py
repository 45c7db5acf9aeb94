"""CloudView: the no-GL path offscreen (label, numpy cloud, throttling, .ply export) and, under an Xvfb
started here, a real GL render of a synthetic RGB-D frame read back from the framebuffer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from app.devices.camera import Frame, Intrinsics
from widgets import cloud_view
from widgets.cloud_view import EDIT_TRACE_COLOR, MODEL_TRACE_COLOR, CloudView, gl_unavailable_reason, to_display

ROOT = Path(__file__).resolve().parents[2]
BOX_RGB, TOP_RGB = (200, 40, 40), (40, 180, 60)
MODEL_TRACE = [(60, 200), (128, 150), (128, 110), (200, 90)]
EDITED_TRACE = [(60, 200), (100, 120), (200, 60)]


def synthetic_frame(w: int = 640, h: int = 480, shift: float = 0.0) -> Frame:
    """A checkered table seen from 0.6 m above, pitched 45° down, with a red box topped in green;
    the top 8 rows have no depth."""
    k = Intrinsics(w, h, 600.0 * w / 640, 600.0 * w / 640, (w - 1) / 2, (h - 1) / 2)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    pitch, height = np.radians(45.0), 0.6
    depth = (height / ((v - k.cy) / k.fy * np.cos(pitch) + np.sin(pitch))).astype(np.float32) + shift
    rgb = np.empty((h, w, 3), np.uint8)
    checker = ((u // 40 + v // 40) % 2).astype(bool)
    rgb[checker], rgb[~checker] = (90, 100, 130), (150, 150, 160)
    box = (u > w * 0.4) & (u < w * 0.6) & (v > h * 0.45) & (v < h * 0.7)
    top = (u > w * 0.4) & (u < w * 0.6) & (v > h * 0.36) & (v <= h * 0.45)
    depth[box] -= 0.12
    depth[top] -= 0.2
    rgb[box], rgb[top] = BOX_RGB, TOP_RGB
    depth[:8] = 0.0
    return Frame(rgb=rgb, depth=depth, intrinsics=k, timestamp=0.0, serial="synthetic")


def read_ply(path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    lines = path.read_text(encoding="ascii").splitlines()
    end = lines.index("end_header")
    counts = {ln.split()[1]: int(ln.split()[2]) for ln in lines[:end] if ln.startswith("element ")}
    body = lines[end + 1:]
    assert len(body) == counts["vertex"] + counts["edge"]
    verts = np.array([ln.split() for ln in body[:counts["vertex"]]], float).reshape(-1, 6)
    edges = np.array([ln.split() for ln in body[counts["vertex"]:]], int).reshape(-1, 5)
    return counts, verts, edges


# ------------------------------------------------------------------ offscreen (no GL)
def test_offscreen_says_why_3d_is_off(qtbot):
    view = CloudView()
    qtbot.addWidget(view)
    view.show()
    assert view.available is False and view.gl_view is None
    assert "offscreen" in view.reason and "no OpenGL" in view.reason
    assert view.message.text() == view.reason and view.message.isVisible()
    assert gl_unavailable_reason() == view.reason


def test_offscreen_frame_traces_and_ply_export(qtbot, tmp_path):
    view = CloudView()
    qtbot.addWidget(view)
    view.show()
    with pytest.raises(RuntimeError, match="no frame"):
        view.export_ply(tmp_path / "empty.ply")
    view.set_traces(MODEL_TRACE, EDITED_TRACE)          # before any frame: kept, lifted later
    assert view.model_trace_3d is None
    frame = synthetic_frame()
    view.set_frame(frame)
    view.set_traces(MODEL_TRACE, EDITED_TRACE + [(128, 0)])   # (128, 0) lies in the band without depth
    cloud = view.cloud
    assert 0 < len(cloud.points) <= 80_000 and cloud.points.dtype == np.float32
    assert np.isfinite(view.model_trace_3d).all()
    assert np.isnan(view.edited_trace_3d[-1]).all() and np.isfinite(view.edited_trace_3d[:-1]).all()

    path = view.export_ply(tmp_path / "step.ply")
    counts, verts, edges = read_ply(path)
    n_cloud, n_model, n_edit = len(cloud.points), len(MODEL_TRACE), len(EDITED_TRACE)
    assert counts == {"vertex": n_cloud + n_model + n_edit, "edge": (n_model - 1) + (n_edit - 1)}
    np.testing.assert_allclose(verts[:n_cloud, :3], cloud.points, atol=1e-4)
    np.testing.assert_array_equal(verts[:n_cloud, 3:], cloud.colors)
    np.testing.assert_allclose(verts[n_cloud:n_cloud + n_model, :3], view.model_trace_3d, atol=1e-4)
    assert (verts[n_cloud:n_cloud + n_model, 3:] == MODEL_TRACE_COLOR).all()
    assert (verts[n_cloud + n_model:, 3:] == EDIT_TRACE_COLOR).all()
    assert edges[0, :2].tolist() == [n_cloud, n_cloud + 1] and edges[-1, 1] == counts["vertex"] - 1

    view.set_traces(None, None)
    assert view.model_trace_3d is None and view.edited_trace_3d is None
    assert read_ply(view.export_ply(tmp_path / "no_trace.ply"))[0] == {"vertex": n_cloud, "edge": 0}
    view.set_frame(None)
    assert view.cloud is None


def test_rebuild_is_throttled_and_keeps_the_newest_frame(qtbot, monkeypatch):
    """Pretend GL is live (the draw calls skip without it): 10 frames in a burst cost one rebuild now
    and one more when the interval has passed, built from the last frame."""
    view = CloudView(min_interval_s=0.2)
    qtbot.addWidget(view)
    monkeypatch.setattr(view, "_live", lambda: True)
    built = []
    build = view._build_data
    monkeypatch.setattr(view, "_build_data", lambda: (built.append(view._frame), build()))
    frames = [synthetic_frame(160, 120, shift=0.01 * i) for i in range(10)]
    t0 = time.monotonic()
    for f in frames:
        view.set_frame(f)
    assert built == [frames[0]]
    qtbot.waitUntil(lambda: len(built) == 2, timeout=2000)
    assert time.monotonic() - t0 >= 0.15 and built[1] is frames[-1]
    qtbot.wait(300)
    assert len(built) == 2


def test_a_pyopengl_binding_qt_cannot_share_is_reported(monkeypatch):
    """The simulator binds PyOpenGL to EGL (or OSMesa); Qt's GLX contexts are then invisible to it."""
    monkeypatch.setattr(cloud_view, "_platform_name", lambda: "xcb")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")
    monkeypatch.delenv("QT_XCB_GL_INTEGRATION", raising=False)
    assert "QT_XCB_GL_INTEGRATION=xcb_egl" in gl_unavailable_reason()
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    assert "OSMesa" in gl_unavailable_reason()
    assert cloud_view.software_gl() is False             # no GL at all is not "software GL"


def test_hidden_view_builds_nothing_until_asked(qtbot):
    view = CloudView(min_interval_s=0.0)
    qtbot.addWidget(view)                       # never shown
    view.set_frame(synthetic_frame(160, 120))
    assert view._cloud is None                  # nothing computed on the UI thread for a hidden panel
    assert len(view.cloud.points) > 0           # ... but the data is there when asked (export)


def test_missing_pyopengl_is_reported_not_raised(qtbot, monkeypatch):
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)     # the simulator may have bound it to EGL
    monkeypatch.setattr(cloud_view, "_platform_name", lambda: "xcb")
    monkeypatch.setattr(cloud_view, "_reason_cache", {})
    for name in ("OpenGL", "OpenGL.GL", "pyqtgraph.opengl"):
        monkeypatch.setitem(sys.modules, name, None)
    reason = gl_unavailable_reason()
    assert reason.startswith("3D view off: pyqtgraph.opengl cannot be imported") and "PyOpenGL" in reason
    view = CloudView()
    qtbot.addWidget(view)
    assert not view.available and view.message.text() == reason
    view.set_frame(synthetic_frame(160, 120))
    view.set_traces(MODEL_TRACE, None)


def test_display_frame_is_a_rotation_with_up_up():
    # camera frame: a point 1 m above the optical axis (y is down), 2 m ahead
    np.testing.assert_allclose(to_display(np.array([[0.5, -1.0, 2.0]])), [[0.5, 2.0, 1.0]])
    assert np.isclose(np.linalg.det(cloud_view._CAMERA_TO_DISPLAY), 1.0)


def test_import_does_not_load_opengl():
    code = ("import sys, widgets.cloud_view; "
            "print(sorted(m for m in ('OpenGL', 'pyqtgraph.opengl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ a real X server (Xvfb)
# xvfb_display: the shared fixture in tests/conftest.py


RENDER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from PySide6 import QtWidgets
    app = QtWidgets.QApplication([])   # no AA_ShareOpenGLContexts: each top-level window has its own context
    from tests.widgets.test_cloud_view import EDITED_TRACE, MODEL_TRACE, synthetic_frame
    from widgets.cloud_view import CloudView
    out_dir = Path(sys.argv[1])

    def settle(view):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (view.gl_view and view.gl_view.isValid()):
            app.processEvents(); time.sleep(0.01)
        for _ in range(10):
            app.processEvents(); time.sleep(0.01)

    views, out = [], {}
    for name in ("first", "second"):
        view = CloudView()
        view.resize(800, 600)
        view.show()
        view.set_frame(synthetic_frame())
        view.set_traces(MODEL_TRACE, EDITED_TRACE)
        settle(view)
        views.append(view)
        out[name] = {"available": view.available, "reason": view.reason}
        if view.available:
            out[name].update(saved=view.gl_view.grabFramebuffer().save(str(out_dir / f"{name}.png")),
                             points=len(view.cloud.points))
    if views[0].available:   # the first view still paints after a second GL context exists
        views[0].gl_view.update()
        settle(views[0])
        views[0].gl_view.grabFramebuffer().save(str(out_dir / "first_again.png"))
    print(json.dumps(out))
""")


def png_pixels(path: Path) -> np.ndarray:
    from PySide6 import QtGui
    img = QtGui.QImage(str(path)).convertToFormat(QtGui.QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    buf = np.frombuffer(img.constBits(), np.uint8, count=img.sizeInBytes()).reshape(h, img.bytesPerLine())
    return buf[:, :w * 3].reshape(h, w, 3).copy()


@pytest.mark.slow
def test_cloud_renders_under_xvfb(xvfb_display, tmp_path):
    # not the simulator's PyOpenGL binding (EGL) that this test process may carry: Qt renders with GLX here
    inherited = {k: v for k, v in os.environ.items() if k not in ("PYOPENGL_PLATFORM", "MUJOCO_GL")}
    env = {**inherited, "DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", RENDER_SCRIPT, str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Error while drawing" not in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("first", "second"):
        assert result[name]["available"] is True, result[name]["reason"]
        assert result[name]["saved"] and result[name]["points"] > 50_000

    for png in ("first.png", "second.png", "first_again.png"):
        px = png_pixels(tmp_path / png)
        assert px.shape[0] > 300 and px.shape[1] > 500, png

        def near(rgb, tol=40):
            return int((np.abs(px.astype(int) - rgb).max(axis=2) <= tol).sum())

        background = near(cloud_view.BACKGROUND, tol=6)
        assert background < 0.9 * px.shape[0] * px.shape[1], f"{png} is (almost) all background"
        assert len(np.unique(px.reshape(-1, 3), axis=0)) > 20, png
        assert near(BOX_RGB) > 300 and near(TOP_RGB) > 100, png                  # the box and its top
        assert near(MODEL_TRACE_COLOR, 30) > 30 and near(EDIT_TRACE_COLOR, 30) > 30, png   # both traces
