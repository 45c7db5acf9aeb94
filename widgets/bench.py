"""Display benchmark: the operator window on a 640x480 RGB-D stream with overlays while the model runs.

    python -m widgets.bench [--seconds 10] [--json] [--model.path DIR] [--model.device cpu|cuda]

The stream is a RealSense recording of the simulated cell (an expert episode rendered at 640x480,
written with the SDK's software device and played back in real time at 60 fps, as a D435 streams
640x480, through the live pipeline path): faster than the 30 fps target, so the figure is the
window's, not the camera's.
The session runs in preview mode, so the model reasons continuously on the same CPU/GPU as the UI.
Figures: ``display_fps`` (frames the window painted per second), ``max_ui_stall_ms`` (the largest gap
between ticks of a 5 ms UI-thread timer: how long the UI could not react). Runs offscreen unless a
display is set.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from app.config import DEFAULT_MODEL_PATH


def record_sim_stream(path: Path, frames: int = 180, width: int = 640, height: int = 480, fps: int = 60) -> Path:
    """An expert pick episode of the simulated cell, as a .db3 RealSense recording."""
    from app.devices.rs_writer import write_recording
    from app.sim.cell import SimCell, SimConfig
    from app.sim.tasks import get_task

    task = get_task("pick up the red cube")
    with SimCell(SimConfig(seed=3, task=task.name, front_size=(width, height))) as cell:
        cell.reset(3, task.name)
        expert = task.make_expert(cell)
        k = cell.intrinsics("front", width, height)
        pairs = []
        for _ in range(frames):
            rgb, depth, _ = cell.render("front", width, height)
            pairs.append((rgb, np.clip(depth * 1000.0, 0, 65535).astype(np.uint16)))
            if not expert.done:
                cell.step(expert.act().action)
    return write_recording(path, pairs, k, depth_scale=0.001, serial="sim-bench", fps=fps)


def measure(seconds: float, model_path: str, device: str, camera_fps: int = 60, warmup_s: float = 1.5,
            show_3d: bool = True) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "xcb")
    from widgets.app import configure_pyqtgraph, prepare_gl
    prepare_gl(uses_sim=True)                          # the stream is rendered by the simulator
    from PySide6 import QtCore, QtWidgets

    from app.devices.realsense import RecordingCamera
    from app.session import FrameEvent, RunMode, Session, SessionConfig
    from model.checkpoint import load_checkpoint
    from model.decoder import MolmoActDecoder

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    configure_pyqtgraph()
    from widgets.main_window import MainWindow

    with tempfile.TemporaryDirectory() as tmp:
        rec = record_sim_stream(Path(tmp) / "sim.db3", fps=camera_fps)
        camera = RecordingCamera(rec, loop=True, realtime=True)
        camera.connect()
        decoder = MolmoActDecoder(load_checkpoint(model_path, device=device))
        session = Session(camera, decoder, None, config=SessionConfig(
            instruction="pick up the red cube", run_mode=RunMode.PREVIEW, arm_type="none",
            model_name=Path(model_path).name, device=device))
        window = MainWindow(session)
        window.resize(1400, 860)
        window.show()
        window.cloud_view.setVisible(show_3d)
        window.controls.set_overlay("model")          # overlays on: model depth blended on the RGB
        session.start()
        session.play()

        ticks: list[float] = []
        timer = QtCore.QTimer()
        timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start(5)
        t_end = time.perf_counter() + warmup_s + seconds
        measure_from = time.perf_counter() + warmup_s
        frames_at_start = None
        seen: list = [None, 0]                         # the camera's own rate, for comparison

        def count_camera(ev, seen=seen) -> None:
            if isinstance(ev, FrameEvent) and ev.frame is not seen[0]:
                seen[0], seen[1] = ev.frame, seen[1] + 1
        session.subscribe(count_camera)
        while time.perf_counter() < t_end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            if frames_at_start is None and time.perf_counter() >= measure_from:
                frames_at_start = window.frames_shown
                reasons_at_start = session.counters["reason"]
                camera_at_start = seen[1]
                ticks.clear()
            time.sleep(0.001)
        elapsed = time.perf_counter() - measure_from
        frames = window.frames_shown - (frames_at_start or 0)
        reasons = session.counters["reason"] - reasons_at_start
        camera_frames = seen[1] - camera_at_start
        timer.stop()
        gaps = np.diff(np.array(ticks)) * 1e3 if len(ticks) > 1 else np.array([0.0])
        reason_ms = session.reasoning.timings_ms.get("total") if session.reasoning else None
        window.close()
        app.processEvents()
        camera_status = camera.status.value
    return {
        "display_fps": round(frames / elapsed, 1),
        "max_ui_stall_ms": round(float(gaps.max()), 1),
        "ui_tick_p99_ms": round(float(np.percentile(gaps, 99)), 1),
        "ui_tick_median_ms": round(float(statistics.median(gaps.tolist())), 2),
        "model_steps_per_s": round(reasons / elapsed, 2),
        "last_reason_ms": None if reason_ms is None else round(reason_ms, 1),
        "frames_dropped_by_ui": window.bridge.frames_dropped,
        "seconds": round(elapsed, 1),
        "stream": f"640x480 RGB-D, RealSense recording at {camera_fps} fps",
        "camera_frames_per_s": round(camera_frames / elapsed, 1),
        "platform": QtWidgets.QApplication.platformName(),
        "device": device,
        "view_3d": "hidden" if not show_3d else (
            "on" if window.cloud_view.available else f"unavailable ({window.cloud_view.reason})"),
        "camera_after": camera_status,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m widgets.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--camera-fps", type=int, default=60, help="the recorded stream's rate (a D435 does 60 at 640x480)")
    p.add_argument("--model.path", dest="model_path", default=str(DEFAULT_MODEL_PATH))
    p.add_argument("--model.device", dest="device", default="cpu")
    p.add_argument("--no-3d", dest="show_3d", action="store_false", help="hide the 3D view (for comparison)")
    args = p.parse_args(argv)
    result = measure(args.seconds, args.model_path, args.device, args.camera_fps, show_3d=args.show_3d)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'figure':<24} value")
        for k, v in result.items():
            print(f"{k:<24} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
