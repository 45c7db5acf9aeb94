"""``python -m app.sim.bench [--json]``: render and control-step speed of the simulated cell.

Reports the median over ``--frames`` renders (RGB + depth, one camera, after warm-up) at 320x240 and
640x480, and the median compute time of one control step (IK + one control period of physics).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from app.sim.cell import SimCell, SimConfig


@dataclass
class BenchResult:
    gl_backend: str
    render_fps_320x240: float
    render_fps_640x480: float
    control_step_ms: float
    camera: str
    frames: int
    control_steps: int
    substeps: int


def _median_seconds(fn, n: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run(frames: int = 50, steps: int = 100, camera: str = "front", warmup: int = 5,
        config: SimConfig | None = None) -> BenchResult:
    cell = SimCell(config)
    try:
        fps = {}
        for w, h in ((320, 240), (640, 480)):
            fps[(w, h)] = 1.0 / _median_seconds(lambda: cell.render(camera, w, h), frames, warmup)
        rng = np.random.default_rng(0)
        actions = np.concatenate([rng.uniform(-0.01, 0.01, (steps + warmup, 3)),
                                  rng.uniform(-0.03, 0.03, (steps + warmup, 3)),
                                  rng.uniform(0, 1, (steps + warmup, 1))], axis=1)
        it = iter(actions)
        step_s = _median_seconds(lambda: cell.step(next(it)), steps, warmup)
        return BenchResult(gl_backend=cell.gl_backend, render_fps_320x240=round(fps[(320, 240)], 1),
                           render_fps_640x480=round(fps[(640, 480)], 1),
                           control_step_ms=round(step_s * 1e3, 3), camera=camera, frames=frames,
                           control_steps=steps, substeps=cell.config.steps_per_control)
    finally:
        cell.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--camera", default="front", choices=("front", "wrist"))
    ap.add_argument("--shadows", action="store_true", help="render with shadows (slower)")
    args = ap.parse_args(argv)
    res = run(args.frames, args.steps, args.camera, config=SimConfig(shadows=args.shadows))
    if args.json:
        print(json.dumps(asdict(res)))
        return
    print(f"gl backend          {res.gl_backend}")
    print(f"render 320x240      {res.render_fps_320x240:8.1f} fps  (RGB + depth, {res.camera})")
    print(f"render 640x480      {res.render_fps_640x480:8.1f} fps  (RGB + depth, {res.camera})")
    print(f"control step        {res.control_step_ms:8.3f} ms   (IK + {res.substeps} physics substeps)")


if __name__ == "__main__":
    main()
