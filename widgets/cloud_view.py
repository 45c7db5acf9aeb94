"""The 3D panel: the coloured point cloud of the latest RGB-D frame with the model's and the operator's
traces lifted into 3D (pyqtgraph.opengl), and an ASCII ``.ply`` export of both.

Geometry comes from ``app.pointcloud`` (camera frame, OpenCV axes). This view only converts it to a
display frame and draws it. Without OpenGL (the ``offscreen`` Qt platform, PyOpenGL missing, no GL
driver) the panel says why in a label instead of crashing; the numpy data and the export still work.

``pyqtgraph.opengl`` (and through it PyOpenGL) is imported lazily, so importing this module needs
neither.
"""
from __future__ import annotations

import os

import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from app.pointcloud import MAX_DISPLAY_POINTS, PointCloud, backproject, lift_trace, stride_for

MODEL_TRACE_COLOR = (255, 140, 0)     # orange, as in the camera view
EDIT_TRACE_COLOR = (0, 255, 255)      # cyan, as drawn for steer_visual
BACKGROUND = (18, 18, 24)
MIN_INTERVAL_S = 0.2                  # the cloud changes slowly: rebuild at most 5 times a second
NO_GL_PLATFORMS = ("offscreen", "minimal")

TraceLike = Sequence[Sequence[float]] | None

# Camera frame (x right, y down, z forward) -> display frame (x right, y forward, z up): a proper
# rotation (det +1), so GLViewWidget's orbit turns about "up" and the scene is not mirrored.
_CAMERA_TO_DISPLAY = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float32)

_reason_cache: dict[str, str | None] = {}
_renderer_cache: dict[str, str] = {}
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")
SOFTWARE_GL_POINTS = 20_000          # the cloud size on a CPU renderer
SOFTWARE_GL_INTERVAL_S = 0.5         # and its rebuild interval


def software_gl() -> bool:
    """True when GL is rendered on the CPU (Mesa llvmpipe: Xvfb, VMs). A window holding a GL view is
    composited through GL as a whole, which costs a CPU renderer the display rate, so the main window
    keeps the 3D view in a window of its own then."""
    if gl_unavailable_reason() is not None:
        return False
    renderer = _renderer_cache.get(_platform_name(), "").lower()
    return any(name in renderer for name in SOFTWARE_RENDERERS)


def to_display(points: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points → display frame (x right, y forward, z up)."""
    return np.asarray(points, np.float32).reshape(-1, 3) @ _CAMERA_TO_DISPLAY.T


def _platform_name() -> str:
    return QtGui.QGuiApplication.platformName()


def _probe_context(platform: str) -> str | None:
    """Create a GL context and make it current on an offscreen surface: a driver that cannot do this
    cannot back a QOpenGLWidget either."""
    ctx = QtGui.QOpenGLContext()
    if not ctx.create():
        return f"3D view off: Qt could not create an OpenGL context on the '{platform}' platform (no GL driver?)"
    surface = QtGui.QOffscreenSurface()
    surface.setFormat(ctx.format())
    surface.create()
    try:
        if not surface.isValid():
            return f"3D view off: no OpenGL surface on the '{platform}' platform"
        if not ctx.makeCurrent(surface):
            return f"3D view off: an OpenGL context on the '{platform}' platform cannot be made current"
        _renderer_cache[platform] = str(ctx.functions().glGetString(0x1F01) or "")   # GL_RENDERER
        ctx.doneCurrent()
    finally:
        surface.destroy()
    return None


def gl_unavailable_reason() -> str | None:
    """Why the 3D view cannot run in this process, or None when it can. Needs a QApplication."""
    if QtGui.QGuiApplication.instance() is None:
        return "3D view off: no QApplication exists yet"
    platform = _platform_name()
    if platform in NO_GL_PLATFORMS:
        return (f"3D view off: the '{platform}' Qt platform has no OpenGL "
                "(run under X11/Wayland or Xvfb)")
    binding = os.environ.get("PYOPENGL_PLATFORM", "")
    if binding == "osmesa":
        return ("3D view off: PyOpenGL is bound to OSMesa for the simulator's renderer, which Qt's "
                "contexts cannot share (install the Mesa EGL libraries so the simulator uses EGL)")
    if binding == "egl" and platform == "xcb" and os.environ.get("QT_XCB_GL_INTEGRATION") != "xcb_egl":
        return ("3D view off: PyOpenGL is bound to EGL (the simulator's renderer) but Qt uses GLX; "
                "start with QT_XCB_GL_INTEGRATION=xcb_egl (widgets.app.prepare_gl does this)")
    if platform not in _reason_cache:
        try:
            import OpenGL.GL  # noqa: F401  (PyOpenGL: pyqtgraph.opengl needs it, pyqtgraph does not pull it in)
            import pyqtgraph.opengl  # noqa: F401
        except Exception as exc:  # ImportError, or PyOpenGL failing to load libGL
            _reason_cache[platform] = (f"3D view off: pyqtgraph.opengl cannot be imported "
                                       f"({type(exc).__name__}: {exc}); is PyOpenGL installed?")
        else:
            _reason_cache[platform] = _probe_context(platform)
    return _reason_cache[platform]


_view_class = None


def _gl_view_class():
    """GLViewWidget that keeps pyqtgraph's shader programs per GL context.

    pyqtgraph caches each item class's compiled program on the class (``_shaderProgram``), i.e. for the
    first context that painted. A second, non-sharing context (a second CloudView, or this one moved to
    another window, which recreates its context) then fails in ``glUseProgram`` with GL_INVALID_VALUE
    unless the app set ``Qt.AA_ShareOpenGLContexts`` before creating the QApplication. Swapping the
    cache in and out around each paint makes every view correct either way.
    """
    global _view_class
    if _view_class is None:
        import pyqtgraph.opengl as gl
        GLLinePlotItem, GLScatterPlotItem = gl.GLLinePlotItem, gl.GLScatterPlotItem
        cached = tuple(c for c in (getattr(gl, n, None) for n in (
            "GLLinePlotItem", "GLScatterPlotItem", "GLImageItem", "GLVolumeItem"))
            if c is not None and hasattr(c, "_shaderProgram"))

        class _PerContextGLView(gl.GLViewWidget):
            def __init__(self, *args, **kwargs):
                self._programs: dict = {}
                self._had_context = False
                super().__init__(*args, **kwargs)

            def initializeGL(self):
                # A new context (first show, or moved to another top-level window): programs and
                # buffers of an old one are void here, so compile again and upload all data again.
                self._programs = {}
                super().initializeGL()
                if self._had_context:
                    self._reupload()
                self._had_context = True

            def _reupload(self):
                stack = list(self.items)
                while stack:
                    item = stack.pop()
                    stack.extend(item.childItems())
                    if isinstance(item, (GLLinePlotItem, GLScatterPlotItem)) and item.pos is not None:
                        kw = {"pos": item.pos}
                        if isinstance(item.color, np.ndarray):
                            kw["color"] = item.color
                        if isinstance(item, GLScatterPlotItem) and isinstance(item.size, np.ndarray):
                            kw["size"] = item.size
                        item.setData(**kw)

            def paint(self, **kwargs):
                saved = {c: c._shaderProgram for c in cached}
                for c in cached:
                    c._shaderProgram = self._programs.get(c)
                try:
                    return super().paint(**kwargs)
                finally:
                    for c in cached:
                        self._programs[c] = c._shaderProgram
                        c._shaderProgram = saved[c]

        _view_class = _PerContextGLView
    return _view_class


def _rgba(rgb: Sequence[int], alpha: float = 1.0) -> tuple[float, float, float, float]:
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, alpha)


def _finite_rows(points: np.ndarray | None) -> np.ndarray:
    if points is None:
        return np.empty((0, 3), np.float32)
    p = np.asarray(points, np.float32).reshape(-1, 3)
    return p[np.isfinite(p).all(axis=1)]


class CloudView(QtWidgets.QWidget):
    """Point cloud + 3D traces. Orbit with the left button, pan with the middle one (or Ctrl+left),
    zoom with the wheel: GLViewWidget's own mouse handling."""

    # The first view: behind the real camera (display -y), a little to its right and above, so both
    # the image layout and the depth relief read at a glance.
    VIEW_AZIMUTH_DEG = -75.0
    VIEW_ELEVATION_DEG = 25.0

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, min_interval_s: float = MIN_INTERVAL_S,
                 max_depth_m: float = 3.0, max_points: int = MAX_DISPLAY_POINTS) -> None:
        super().__init__(parent)
        self._min_interval_s = float(min_interval_s)
        self._max_depth_m = float(max_depth_m)
        self._max_points = int(max_points)
        self._frame = None
        self._cloud: PointCloud | None = None
        self._cloud_stale = False          # a frame arrived that the cloud does not reflect yet
        self._draw_pending = False         # the GL items do not show the cloud yet
        self._last_build = -1e9
        self._framed = False               # the camera was placed on the first non-empty cloud
        self._model_trace: TraceLike = None
        self._edited_trace: TraceLike = None
        self._model_3d: np.ndarray | None = None
        self._edited_3d: np.ndarray | None = None
        self.gl_view = None                # pyqtgraph.opengl.GLViewWidget when available

        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._rebuild_if_live)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self._reason = gl_unavailable_reason()
        if self._reason is None:
            try:
                self._build_gl(layout)
            except Exception as exc:  # a driver that passed the probe but fails here: say so, don't crash
                self.gl_view = None
                self._reason = f"3D view off: building the OpenGL view failed ({type(exc).__name__}: {exc})"
        if self._reason is not None:
            self.message = QtWidgets.QLabel(self._reason)
            self.message.setObjectName("cloudViewOff")
            self.message.setWordWrap(True)
            self.message.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            self.message.setMinimumSize(200, 120)
            layout.addWidget(self.message, 1)
        else:
            self.message = None
        self.legend = QtWidgets.QLabel(
            f"<span style='color:rgb{MODEL_TRACE_COLOR}'>&#9632;</span> model trace &nbsp; "
            f"<span style='color:rgb{EDIT_TRACE_COLOR}'>&#9632;</span> edited trace &nbsp; "
            "<i>drag: orbit · wheel: zoom · middle/Ctrl-drag: pan</i>")
        self.legend.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.legend.setVisible(self.available)
        layout.addWidget(self.legend, 0)

    # ---------------------------------------------------------------- GL scene
    def _build_gl(self, layout: QtWidgets.QVBoxLayout) -> None:
        import pyqtgraph.opengl as gl

        view = _gl_view_class()()
        view.setBackgroundColor(BACKGROUND)
        view.setMinimumSize(200, 150)
        grid = gl.GLGridItem(color=(255, 255, 255, 50))
        grid.setSpacing(0.1, 0.1, 0.1)
        grid.setSize(2.0, 2.0, 1.0)
        # at the camera: x blue (right), y yellow (forward), z green (up)
        axis = gl.GLAxisItem(size=QtGui.QVector3D(0.1, 0.1, 0.1))
        cloud = gl.GLScatterPlotItem(pos=np.zeros((1, 3), np.float32), size=2.0, pxMode=True,
                                     color=(1.0, 1.0, 1.0, 1.0))
        cloud.setGLOptions("opaque")       # additive blending would saturate a dense cloud to white
        cloud.setVisible(False)
        on_top = self._on_top_gl_options()
        items = {}
        for name, rgb, width, size in (("model", MODEL_TRACE_COLOR, 2.0, 9.0), ("edited", EDIT_TRACE_COLOR, 3.0, 12.0)):
            line = gl.GLLinePlotItem(pos=np.zeros((2, 3), np.float32), color=_rgba(rgb), width=width,
                                     antialias=True, mode="line_strip")
            dots = gl.GLScatterPlotItem(pos=np.zeros((1, 3), np.float32), color=_rgba(rgb), size=size, pxMode=True)
            for it, depth in ((line, 10), (dots, 11)):
                it.setGLOptions(on_top)    # a trace lies on surfaces: draw it over the cloud, not into it
                it.setDepthValue(depth + (2 if name == "edited" else 0))
                it.setVisible(False)
            items[name] = (line, dots)
        for it in (grid, axis, cloud, *items["model"], *items["edited"]):
            view.addItem(it)
        view.setCameraPosition(pos=QtGui.QVector3D(0, 1.0, 0), distance=2.0,
                                elevation=self.VIEW_ELEVATION_DEG, azimuth=self.VIEW_AZIMUTH_DEG)
        self.gl_view, self._grid, self._axis, self._cloud_item, self._trace_items = view, grid, axis, cloud, items
        layout.addWidget(view, 1)

    @staticmethod
    def _on_top_gl_options() -> dict:
        from OpenGL import GL
        return {GL.GL_DEPTH_TEST: False, GL.GL_BLEND: True, GL.GL_CULL_FACE: False,
                "glBlendFunc": (GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA)}

    # ---------------------------------------------------------------- public API
    @property
    def available(self) -> bool:
        return self.gl_view is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def cloud(self) -> PointCloud | None:
        """The cloud of the latest frame (camera frame), built now if the view has not built it yet."""
        if self._cloud_stale:
            self._build_data()
        return self._cloud

    @property
    def model_trace_3d(self) -> np.ndarray | None:
        """(N, 3) camera-frame points of the model's trace; NaN rows where depth is unknown."""
        return self._model_3d

    @property
    def edited_trace_3d(self) -> np.ndarray | None:
        return self._edited_3d

    def set_frame(self, frame) -> None:
        """Take the newest frame (``app.devices.camera.Frame`` or None to clear). The cloud is rebuilt
        only while the view is visible, enabled and has GL, at most every ``min_interval_s``; the
        newest frame is never dropped, only coalesced."""
        self._frame = frame
        self._cloud_stale = True
        self._relift()
        self._schedule()

    def set_traces(self, model_trace: TraceLike, edited_trace: TraceLike) -> None:
        """Model-space (0..255) waypoints, or None; lifted with the depth of the latest frame."""
        self._model_trace = None if model_trace is None else [tuple(p) for p in model_trace]
        self._edited_trace = None if edited_trace is None else [tuple(p) for p in edited_trace]
        self._relift()
        self._draw_traces()

    def reset_view(self) -> None:
        """Frame the current cloud again (as on the first update)."""
        self._framed = False
        if self._cloud is not None:
            self._frame_camera()

    def export_ply(self, path: str | Path) -> Path:
        """Write the cloud of the latest frame and the 3D trace points as an ASCII PLY (camera frame,
        OpenCV axes, metres). Cloud vertices come first, then the model trace, then the edited trace
        (rows with unknown depth left out); each trace's polyline is an ``edge`` element."""
        cloud = self.cloud
        if cloud is None:
            raise RuntimeError("no frame yet: nothing to export")
        parts = [(cloud.points, np.asarray(cloud.colors, np.uint8))]
        edges, counts = [], []
        start = len(cloud.points)
        for pts, rgb in ((self._model_3d, MODEL_TRACE_COLOR), (self._edited_3d, EDIT_TRACE_COLOR)):
            p = _finite_rows(pts)
            parts.append((p, np.tile(np.array(rgb, np.uint8), (len(p), 1))))
            edges += [(start + i, start + i + 1, *rgb) for i in range(len(p) - 1)]
            counts.append(len(p))
            start += len(p)
        xyz = np.concatenate([p for p, _ in parts]).astype(np.float64)
        rgb = np.concatenate([c for _, c in parts]).astype(np.float64)
        path = Path(path)
        header = ["ply", "format ascii 1.0",
                  "comment molmoact-station cloud view: camera frame (x right, y down, z forward), metres",
                  f"comment vertices: cloud {len(cloud.points)}, model_trace {counts[0]}, edited_trace {counts[1]}",
                  f"element vertex {len(xyz)}",
                  "property float x", "property float y", "property float z",
                  "property uchar red", "property uchar green", "property uchar blue",
                  f"element edge {len(edges)}",
                  "property int vertex1", "property int vertex2",
                  "property uchar red", "property uchar green", "property uchar blue",
                  "end_header"]
        with path.open("w", encoding="ascii", newline="\n") as fh:
            fh.write("\n".join(header) + "\n")
            if len(xyz):
                np.savetxt(fh, np.hstack([xyz, rgb]), fmt="%.5f %.5f %.5f %d %d %d")
            if edges:
                np.savetxt(fh, np.asarray(edges, np.int64), fmt="%d")
        return path

    # ---------------------------------------------------------------- internals
    def _live(self) -> bool:
        return self.available and self.isVisible() and self.isEnabled()

    def _schedule(self) -> None:
        if not (self._cloud_stale or self._draw_pending) or not self._live():
            return                         # hidden/disabled/no GL: built lazily (showEvent, .cloud, export)
        wait = self._last_build + self._min_interval_s - time.monotonic()
        if wait <= 0:
            self._timer.stop()
            self._rebuild()
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def _rebuild_if_live(self) -> None:
        if (self._cloud_stale or self._draw_pending) and self._live():
            self._rebuild()

    def _rebuild(self) -> None:
        if self._cloud_stale:
            self._build_data()
        self._draw_cloud()
        self._draw_traces()

    def _build_data(self) -> None:
        """The numpy part: back-projection on a pixel grid (≤ max_points points)."""
        frame = self._frame
        self._cloud_stale = False
        self._draw_pending = True
        self._last_build = time.monotonic()
        if frame is None:
            self._cloud = None
            return
        h, w = frame.depth.shape
        self._cloud = backproject(frame.depth, frame.rgb, frame.intrinsics,
                                  stride=stride_for(w, h, self._max_points), max_depth_m=self._max_depth_m)

    def _relift(self) -> None:
        frame = self._frame
        if frame is None:
            self._model_3d = self._edited_3d = None
            return
        self._model_3d = (None if not self._model_trace
                          else lift_trace(self._model_trace, frame.depth, frame.intrinsics))
        self._edited_3d = (None if not self._edited_trace
                           else lift_trace(self._edited_trace, frame.depth, frame.intrinsics))

    def _draw_cloud(self) -> None:
        if not self.available:
            return
        self._draw_pending = False
        cloud = self._cloud
        if cloud is None or len(cloud.points) == 0:
            self._cloud_item.setVisible(False)
            return
        color = np.empty((len(cloud.colors), 4), np.float32)
        color[:, :3] = cloud.colors
        color[:, :3] *= 1.0 / 255.0
        color[:, 3] = 1.0
        self._cloud_item.setData(pos=to_display(cloud.points), color=color)
        self._cloud_item.setVisible(True)
        if not self._framed:
            self._frame_camera()

    def _draw_traces(self) -> None:
        if not self.available:
            return
        for name, pts in (("model", self._model_3d), ("edited", self._edited_3d)):
            line, dots = self._trace_items[name]
            p = to_display(_finite_rows(pts))
            if len(p) >= 2:
                line.setData(pos=p)
            line.setVisible(len(p) >= 2)
            if len(p):
                dots.setData(pos=p)
            dots.setVisible(len(p) > 0)

    def _frame_camera(self) -> None:
        """Look from behind and a little above the real camera at the middle of the cloud, far enough
        back to see all of it; lay the grid under it."""
        cloud = self._cloud
        if cloud is None or len(cloud.points) == 0:
            return
        p = to_display(cloud.points)
        lo, hi = np.percentile(p, 2, axis=0), np.percentile(p, 98, axis=0)
        center = np.median(p, axis=0)
        # fit a sphere holding 98 % of the points into the narrower field of view
        radius = float(np.percentile(np.linalg.norm(p - center, axis=1), 98))
        w, h = max(1, self.gl_view.width()), max(1, self.gl_view.height())
        half = np.arctan(np.tan(np.radians(self.gl_view.opts["fov"]) / 2) * min(1.0, h / w))
        distance = max(radius / float(np.sin(half)), 0.3)
        self.gl_view.setCameraPosition(pos=QtGui.QVector3D(*map(float, center)), distance=distance,
                                       elevation=self.VIEW_ELEVATION_DEG, azimuth=self.VIEW_AZIMUTH_DEG)
        size = max(0.2, float(np.ceil(max(hi[0] - lo[0], hi[1] - lo[1]) * 10 + 2) / 10))
        self._grid.setSize(size, size, 1.0)
        self._grid.resetTransform()
        self._grid.translate(float(center[0]), float(center[1]), float(lo[2]))
        self._framed = True

    # ---------------------------------------------------------------- Qt events
    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        if (self._cloud_stale or self._draw_pending) and self.available:
            self._timer.start(0)

    def changeEvent(self, event: QtCore.QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QtCore.QEvent.Type.EnabledChange and self.isEnabled() \
                and (self._cloud_stale or self._draw_pending) and self.available:
            self._timer.start(0)


__all__ = ["CloudView", "EDIT_TRACE_COLOR", "MODEL_TRACE_COLOR", "gl_unavailable_reason", "to_display"]
