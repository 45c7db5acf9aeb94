"""The RGB view: the frame, the model's trace (dashed), the operator's editable trace (solid, numbered),
the end effector's projected position, and an optional depth overlay blended on top.

Coordinates: items live in image pixels; the session speaks model space (0..255). The mapping is
``app.trace``'s, the same one ``draw_trace`` uses for ``steer_visual``.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore

from app import trace as tr
from widgets.trace_item import TraceItem

MODEL_TRACE_COLOR = (255, 140, 0)      # the model's trace: orange, dashed
EDIT_TRACE_COLOR = (0, 255, 255)       # the operator's trace: cyan (as drawn for steer_visual), solid
EE_COLOR = (255, 0, 255)
TURBO = pg.colormap.get("turbo")


class CameraView(pg.GraphicsLayoutWidget):
    """Signals carry model-space coordinates; ``final`` marks the end of a drag."""
    sigWaypointMoved = QtCore.Signal(int, float, float, bool)
    sigInsertRequested = QtCore.Signal(float, float)
    sigDeleteRequested = QtCore.Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("cameraView")
        self.vb = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setColorMap(TURBO)
        self.overlay.setOpacity(0.5)
        self.overlay.setVisible(False)
        self.model_trace = TraceItem(MODEL_TRACE_COLOR, symbol_size=9, editable=False, dashed=True)
        self.edit_trace = TraceItem(EDIT_TRACE_COLOR, symbol_size=15, editable=True)
        self.ee_marker = pg.ScatterPlotItem(size=22, symbol="+", pen=pg.mkPen(EE_COLOR, width=3),
                                            brush=pg.mkBrush(None))
        self.caption = pg.TextItem(color=(255, 255, 255), fill=pg.mkBrush(0, 0, 0, 140), anchor=(0, 0))
        for item, z in ((self.image, 0), (self.overlay, 1), (self.model_trace, 2), (self.ee_marker, 3),
                        (self.edit_trace, 4), (self.caption, 5)):
            item.setZValue(z)
            self.vb.addItem(item)
        self.caption.setPos(4, 4)
        self.signal = pg.TextItem(color=(255, 255, 255), fill=pg.mkBrush(180, 0, 0, 200), anchor=(0, 1))
        self.signal.setZValue(6)
        self.signal.setVisible(False)
        self.vb.addItem(self.signal)
        self._size = (0, 0)
        self._overlay_source: str = "off"
        self.edit_trace.sigDragging.connect(lambda i, x, y: self._moved(i, x, y, False))
        self.edit_trace.sigDragFinished.connect(lambda i, x, y: self._moved(i, x, y, True))
        self.scene().sigMouseClicked.connect(self._clicked)

    # ---------------------------------------------------------------------------- data in
    def set_frame(self, rgb: np.ndarray, ee_pixel: tuple[float, float] | None = None) -> None:
        h, w = rgb.shape[:2]
        self.image.setImage(rgb, autoLevels=False, levels=(0, 255))
        if (w, h) != self._size:
            self._size = (w, h)
            self.edit_trace.set_bounds(w, h)
            self.vb.setDefaultPadding(0.0)
            self.vb.enableAutoRange()                 # the whole image, kept in view on resize
        if ee_pixel is None:
            self.ee_marker.setData([], [])
        else:
            self.ee_marker.setData([ee_pixel[0]], [ee_pixel[1]])

    def set_overlay(self, depth: np.ndarray | None, levels: tuple[float, float]) -> None:
        """A depth image stretched over the frame (the model's 320x320 map or the sensor's)."""
        if depth is None or not self._size[0]:
            self.overlay.clear()
            return
        self.overlay.setImage(depth, autoLevels=False, levels=levels)
        self.overlay.setRect(QtCore.QRectF(0, 0, *self._size))

    def set_overlay_visible(self, visible: bool, opacity: float | None = None) -> None:
        self.overlay.setVisible(visible)
        if opacity is not None:
            self.overlay.setOpacity(float(np.clip(opacity, 0.0, 1.0)))

    def set_traces(self, model_trace, edited_trace) -> None:
        """Model-space traces (0..255); the editable one is the edit, or the model's trace to start from."""
        w, h = self._size
        if not w:
            return
        self.model_trace.set_points(tr.to_pixels(model_trace, w, h) if model_trace else [])
        start = edited_trace if edited_trace else model_trace
        self.edit_trace.set_points(tr.to_pixels(start, w, h) if start else [])
        self.edit_trace.setOpacity(1.0 if edited_trace else 0.55)

    def set_caption(self, text: str) -> None:
        self.caption.setText(text)

    def set_signal(self, warning: str | None) -> None:
        """A banner over a frame that is no longer live (camera ended, reconnecting, failed)."""
        self.signal.setVisible(bool(warning))
        if warning:
            self.signal.setText(warning)
            self.signal.setPos(4, max(1, self._size[1]) - 4)

    # ---------------------------------------------------------------------------- operator out
    def to_model(self, x: float, y: float) -> tuple[int, int]:
        w, h = self._size
        return tr.from_pixels([(x, y)], w, h)[0]

    def to_viewport(self, x: float, y: float) -> QtCore.QPoint:
        """Image pixel → viewport position (what mouse events use; tests drive drags with it)."""
        return self.mapFromScene(self.vb.mapViewToScene(QtCore.QPointF(x, y)))

    def _moved(self, i: int, x: float, y: float, final: bool) -> None:
        mx, my = self.to_model(x, y)
        self.sigWaypointMoved.emit(i, float(mx), float(my), final)

    def _clicked(self, ev) -> None:
        if not self._size[0] or not self.vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = self.vb.mapSceneToView(ev.scenePos())
        x, y = p.x(), p.y()
        w, h = self._size
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            return
        hit = self.edit_trace.index_at(x, y)
        right = ev.button() == QtCore.Qt.MouseButton.RightButton
        ctrl = bool(ev.modifiers() & QtCore.Qt.KeyboardModifier.ControlModifier)
        if hit is not None and (right or ctrl):
            ev.accept()
            self.sigDeleteRequested.emit(hit)

    def mouseDoubleClickEvent(self, ev) -> None:  # noqa: N802 - Qt's name
        """Insert a waypoint. Handled on the view itself: pyqtgraph's scene drops a double click when
        the first click of the pair was already delivered."""
        if ev.button() == QtCore.Qt.MouseButton.LeftButton and self._size[0]:
            p = self.vb.mapSceneToView(self.mapToScene(ev.position().toPoint()))
            x, y = p.x(), p.y()
            w, h = self._size
            if 0 <= x <= w - 1 and 0 <= y <= h - 1 and self.edit_trace.index_at(x, y) is None:
                mx, my = self.to_model(x, y)
                self.sigInsertRequested.emit(float(mx), float(my))
                ev.accept()
                return
        super().mouseDoubleClickEvent(ev)
