"""The editable trace: numbered waypoints the operator drags, in image pixel coordinates.

Drag habits follow napari's changing/changed split: ``sigDragging`` on every move (the view redraws),
``sigDragFinished`` once when the button is released (the session re-decodes then, not before).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui


class TraceItem(pg.GraphItem):
    sigDragging = QtCore.Signal(int, float, float)        # index, x, y (pixels, clamped to the image)
    sigDragFinished = QtCore.Signal(int, float, float)

    def __init__(self, color=(0, 255, 255), symbol_size: float = 14.0, editable: bool = True,
                 dashed: bool = False) -> None:
        super().__init__()
        self._color = color
        self._symbol_size = symbol_size
        self.editable = editable
        style = QtCore.Qt.PenStyle.DashLine if dashed else QtCore.Qt.PenStyle.SolidLine
        self._pen = pg.mkPen(color=color, width=2, style=style)
        self._points = np.zeros((0, 2))
        self._labels: list[pg.TextItem] = []
        self._bounds = (1.0, 1.0)
        self._drag_index: int | None = None
        self._drag_offset = np.zeros(2)

    # do not name anything `pos` or `_update`: GraphItem uses both (reference/gui.md)
    def set_bounds(self, width: int, height: int) -> None:
        self._bounds = (float(width - 1), float(height - 1))

    def set_points(self, points) -> None:
        if self._drag_index is not None:
            return                                  # the operator is moving a point: don't yank it
        self._points = np.asarray(points, float).reshape(-1, 2).copy()
        self._redraw()

    def points(self) -> np.ndarray:
        return self._points.copy()

    def _redraw(self) -> None:
        n = len(self._points)
        if n == 0:
            self.setData(pos=np.zeros((0, 2)), adj=np.zeros((0, 2), int))
        else:
            adj = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1) if n > 1 else np.zeros((0, 2), int)
            brushes = [pg.mkBrush(*self._color, 200)] * n
            self.setData(pos=self._points, adj=adj, pen=self._pen, size=self._symbol_size, symbol="o",
                         symbolBrush=brushes, symbolPen=pg.mkPen("k"), pxMode=True)
        while len(self._labels) < n:
            label = pg.TextItem(color=(0, 0, 0), anchor=(0.5, 0.5))
            label.setParentItem(self)
            font = QtGui.QFont()
            font.setPointSize(7)
            font.setBold(True)
            label.setFont(font)
            self._labels.append(label)
        for i, label in enumerate(self._labels):
            if i < n:
                label.setText(str(i + 1))
                label.setPos(*self._points[i])
                label.show()
            else:
                label.hide()

    def index_at(self, x: float, y: float, radius_px: float | None = None) -> int | None:
        """The waypoint under an image position (screen radius of the symbol), if any."""
        if not len(self._points) or self.scatter is None:
            return None
        hits = self.scatter.pointsAt(QtCore.QPointF(x, y))
        if len(hits):
            return int(hits[0].index())
        return None

    def _clamped(self, p: np.ndarray) -> np.ndarray:
        return np.clip(p, [0.0, 0.0], self._bounds)

    def mouseDragEvent(self, ev) -> None:
        if not self.editable or ev.button() != QtCore.Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        if ev.isStart():
            down = ev.buttonDownPos()
            hits = self.scatter.pointsAt(down)
            if not len(hits):
                ev.ignore()                         # let the ViewBox pan
                return
            self._drag_index = int(hits[0].index())
            self._drag_offset = self._points[self._drag_index] - np.array([down.x(), down.y()])
        elif self._drag_index is None:
            ev.ignore()
            return
        i = self._drag_index
        p = self._clamped(np.array([ev.pos().x(), ev.pos().y()]) + self._drag_offset)
        self._points[i] = p
        self._redraw()
        ev.accept()
        if ev.isFinish():
            self._drag_index = None
            self.sigDragFinished.emit(i, float(p[0]), float(p[1]))
        else:
            self.sigDragging.emit(i, float(p[0]), float(p[1]))
