"""Sensor depth (colour-mapped, metres under the cursor) beside the model's decoded depth map."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore

TURBO = pg.colormap.get("turbo")


class DepthView(pg.GraphicsLayoutWidget):
    sigHover = QtCore.Signal(str)

    def __init__(self, max_depth_m: float = 2.0, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("depthView")
        self.max_depth_m = max_depth_m
        self.sensor_vb = self.addViewBox(row=0, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.model_vb = self.addViewBox(row=0, col=1, lockAspect=True, invertY=True, enableMenu=False)
        self.sensor = pg.ImageItem(axisOrder="row-major")
        self.model = pg.ImageItem(axisOrder="row-major")
        for vb, item, title in ((self.sensor_vb, self.sensor, "sensor depth (m)"),
                                (self.model_vb, self.model, "model depth (relative)")):
            item.setColorMap(TURBO)
            vb.addItem(item)
            label = pg.TextItem(title, color=(255, 255, 255), fill=pg.mkBrush(0, 0, 0, 140))
            label.setZValue(5)
            vb.addItem(label)
        self.readout = pg.TextItem("", color=(255, 255, 255), fill=pg.mkBrush(0, 0, 0, 160), anchor=(0, 1))
        self.readout.setZValue(6)
        self.sensor_vb.addItem(self.readout)
        self._depth: np.ndarray | None = None
        self._model: np.ndarray | None = None
        self._sizes: dict[str, tuple[int, int]] = {}
        self.scene().sigMouseMoved.connect(self._hover)

    def set_sensor_depth(self, depth: np.ndarray) -> None:
        self._depth = depth
        self.sensor.setImage(depth, autoLevels=False, levels=(0.0, self.max_depth_m))
        self._fit("sensor", self.sensor_vb, depth.shape)

    def set_model_depth(self, normalized: np.ndarray | None) -> None:
        self._model = normalized
        if normalized is None:
            self.model.clear()
            return
        self.model.setImage(normalized, autoLevels=False, levels=(0.0, 1.0))
        self._fit("model", self.model_vb, normalized.shape)

    def _fit(self, key: str, vb: pg.ViewBox, shape) -> None:
        h, w = shape[:2]
        if self._sizes.get(key) != (w, h):
            self._sizes[key] = (w, h)
            vb.setDefaultPadding(0.0)
            vb.enableAutoRange()
            if key == "sensor":
                self.readout.setPos(2, h - 2)

    def value_text(self, which: str, x: float, y: float) -> str | None:
        """What the readout says at an image position of one of the two views (None: outside)."""
        img = self._depth if which == "sensor" else self._model
        if img is None:
            return None
        h, w = img.shape[:2]
        col, row = int(np.floor(x)), int(np.floor(y))
        if not (0 <= col < w and 0 <= row < h):
            return None
        v = float(img[row, col])
        if which == "sensor":
            return f"({col}, {row}) {v:.3f} m" if v > 0 and np.isfinite(v) else f"({col}, {row}) no depth"
        return f"({col}, {row}) relative {v:.2f}"

    def _hover(self, scene_pos) -> None:
        for which, vb in (("sensor", self.sensor_vb), ("model", self.model_vb)):
            if vb.sceneBoundingRect().contains(scene_pos):
                p = vb.mapSceneToView(scene_pos)
                text = self.value_text(which, p.x(), p.y())
                if text is not None:
                    self.readout.setText(text)
                    self.sigHover.emit(text)
                return
