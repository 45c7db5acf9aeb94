"""Closed-loop evaluation of a checkpoint on the simulated cell (a benchmark, not a test).

``python -m app.sim.eval [--model.path DIR] [--episodes N] [--json]``

On held-out seeds (never used by ``app.sim.train``, whose seeds are below 100 000 per data seed):
* **success_rate**: the model alone (``reason()`` every step, its action sent) until the task's own
  success check passes, the step budget runs out or the object is knocked off the table (a failure);
  per task in ``per_task``.
* **trace_error_px**: along those rollouts, the predicted trace against the expert's trace at the same
  state (the expert the checkpoint learned from, as its ``config.json`` says), both resampled to 5
  points by arc length, mean distance in pixels of the 640x480 front image. ``first_point_error_px``:
  the first waypoint against the projected TCP.
* **depth_abs_rel**: the decoded depth map (inverse depth, 1/m) against the simulator's depth on the
  same 80x80 grid, mean |d_pred - d| / d over pixels within 3 m (the cell; the far backdrop is left out).
* **steering_compliance_text / _visual**: pick tasks only; every step the operator's trace is the one
  that expert would draw to pick *another* object B (as if the operator dragged the trace onto
  B and kept it there), decoded with ``steer_text`` (after ``reason()``) or ``steer_visual``; the
  fraction of episodes whose TCP ends within 3 cm (3-D) of B. ``_xy`` variants: horizontal distance.
* **reason_ms / steer_text_ms / steer_visual_ms**: medians over every call.

Actions pass through the sim arm's ``ActionAdapter`` preset as in the station. Episodes run in
``--workers`` processes.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
from dataclasses import asdict, dataclass, field
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from app.config import DEFAULT_MODEL_PATH
from app.sim.datagen import FRONT_SIZE, PICK_TASKS, WRIST_SIZE, ModelPolicy, inverse_depth
from app.sim.tasks import TASKS, resample_path

HELD_OUT_BASE = 5_000_000
COMPLIANCE_M = 0.03
DEPTH_MAX_M = 3.0
MAX_STEPS = {"pick": 60, "place": 120, "push": 80}
STEER_STEPS = 50
OFF_TABLE_Z = -0.05                 # an object this far below the table top fell off it


@dataclass
class EpisodeResult:
    task: str
    seed: int
    mode: str                       # "reason" | "steer_text" | "steer_visual"
    success: bool = False           # reason: the task; steer: ended within 3 cm of B
    success_xy: bool = False
    steps: int = 0
    final_distance_m: float | None = None
    target: str | None = None
    trace_errors: list[float] = field(default_factory=list)
    first_point_errors: list[float] = field(default_factory=list)
    depth_abs_rel: list[float] = field(default_factory=list)
    reason_ms: list[float] = field(default_factory=list)
    steer_ms: list[float] = field(default_factory=list)
    error: str | None = None


def to_pixels(trace, width: int, height: int) -> np.ndarray:
    t = np.asarray(trace, float).reshape(-1, 2)
    return t / 255.0 * np.array([width - 1.0, height - 1.0])


def trace_distance_px(pred, ref, width: int, height: int) -> float:
    """Both polylines resampled to 5 points by arc length; mean point distance in pixels."""
    a = resample_path(to_pixels(pred, width, height), 5)
    b = resample_path(to_pixels(ref, width, height), 5)
    a = a if len(a) == 5 else np.repeat(a[:1], 5, 0)
    b = b if len(b) == 5 else np.repeat(b[:1], 5, 0)
    return float(np.linalg.norm(a - b, axis=1).mean())


def depth_abs_rel(relative: np.ndarray, depth_m: np.ndarray) -> float:
    """Decoded inverse depth vs the sim's metres on the decoder's grid, pixels within DEPTH_MAX_M."""
    import cv2
    side = relative.shape[0]
    truth_inv = inverse_depth(depth_m, side).astype(np.float32)
    if relative.shape != truth_inv.shape:
        relative = cv2.resize(relative, truth_inv.shape[::-1], interpolation=cv2.INTER_AREA)
    valid = truth_inv > 1.0 / DEPTH_MAX_M
    d = 1.0 / truth_inv[valid]
    pred = 1.0 / np.clip(relative[valid], 1e-3, None)
    return float(np.mean(np.abs(pred - d) / d))


def off_table(cell, name: str) -> bool:
    """Knocked off the table: the task cannot succeed any more, and where the object ends up (on the
    floor, or behind the front camera, where its projection is NaN) says nothing about the model."""
    return bool(cell.object_position(name)[2] < OFF_TABLE_Z)


def pick_other(task: str, seed: int) -> str:
    others = [n for n in PICK_TASKS if TASKS[n].target != TASKS[task].target]
    return others[seed % len(others)]


class Evaluator:
    def __init__(self, model_path: Path, device: str = "cpu") -> None:
        from app.sim.cell import SimCell, SimConfig
        self.policy = ModelPolicy(model_path, device)
        self.cell = SimCell(SimConfig(front_size=FRONT_SIZE, wrist_size=WRIST_SIZE,
                                      wrist_fovy_deg=self.policy.wrist_fovy_deg))

    @property
    def decoder(self):
        return self.policy.decoder

    @property
    def adapter(self):
        return self.policy.adapter

    def close(self) -> None:
        self.cell.close()

    def observe(self, instruction: str):
        return self.policy.observe(self.cell, instruction)

    def send(self, action: np.ndarray) -> None:
        self.cell.step(self.adapter.map(action))

    def run_reason(self, task_name: str, seed: int) -> EpisodeResult:
        task, cell, w, h = TASKS[task_name], self.cell, *FRONT_SIZE
        cell.reset(seed, task)
        shadow = task.make_expert(cell, self.policy.expert)    # its trace at each state the model reaches
        res = EpisodeResult(task_name, seed, "reason")
        for step in range(MAX_STEPS[task.kind]):
            if off_table(cell, task.target):
                break
            obs, depth = self.observe(task.instruction)
            r = self.decoder.reason(obs)
            res.reason_ms.append(r.timings_ms["total"])
            ref = shadow.act().trace
            res.trace_errors.append(trace_distance_px(r.trace, ref, w, h))
            ee = cell.project(cell.ee_pose().position[None], w, h)[0]
            res.first_point_errors.append(float(np.linalg.norm(to_pixels(r.trace[:1], w, h)[0] - ee)))
            if r.depth_map is not None:
                res.depth_abs_rel.append(depth_abs_rel(r.depth_map.relative, depth))
            self.send(r.action)
            res.steps = step + 1
            if task.success(cell):
                res.success = res.success_xy = True
                break
        return res

    def run_steer(self, task_name: str, seed: int, mode: str) -> EpisodeResult:
        task, cell = TASKS[task_name], self.cell
        cell.reset(seed, task)
        target = TASKS[pick_other(task_name, seed)]
        operator = target.make_expert(cell, self.policy.expert)    # draws the trace onto B, keeps it there
        res = EpisodeResult(task_name, seed, mode, target=target.target)
        for step in range(STEER_STEPS):
            obs, _ = self.observe(task.instruction)
            trace = [tuple(map(int, p)) for p in operator.act().trace]
            r0, r = self.policy.steered(obs, trace, mode)
            if r0 is not None:
                res.reason_ms.append(r0.timings_ms["total"])
            res.steer_ms.append(r.timings_ms["total"])
            self.send(r.action)
            res.steps = step + 1
            if target.success(cell):          # B lifted: the gripper holds it
                break
        tcp, obj = cell.ee_pose().position, cell.object_position(target.target)
        res.final_distance_m = float(np.linalg.norm(tcp - obj))
        res.success = res.final_distance_m <= COMPLIANCE_M
        res.success_xy = float(np.linalg.norm((tcp - obj)[:2])) <= COMPLIANCE_M
        return res


def _jobs(tasks: list[str], episodes: int, steer: bool) -> list[tuple[str, int, str]]:
    jobs = []
    for t in tasks:
        for k in range(episodes):
            seed = HELD_OUT_BASE + 1000 * list(TASKS).index(t) + k
            jobs.append((t, seed, "reason"))
            if steer and t in PICK_TASKS:
                jobs += [(t, seed, "steer_text"), (t, seed, "steer_visual")]
    return jobs


def _run_jobs(args: tuple[str, str, list[tuple[str, int, str]]]) -> list[dict]:
    import os
    import torch
    model_path, device, jobs, threads = args
    os.environ.setdefault("LP_NUM_THREADS", str(threads))   # Mesa's software rasterizer: no oversubscription
    torch.set_num_threads(threads)
    ev = Evaluator(Path(model_path), device)
    out = []
    try:
        for task, seed, mode in jobs:
            try:
                res = ev.run_reason(task, seed) if mode == "reason" else ev.run_steer(task, seed, mode)
            except Exception as e:  # noqa: BLE001 - a failing episode is a result, not a crash of the benchmark
                res = EpisodeResult(task, seed, mode, error=f"{type(e).__name__}: {e}")
            out.append(asdict(res))
    finally:
        ev.close()
    return out


def summarize(results: list[dict]) -> dict:
    def rate(rows, key="success"):
        return round(float(np.mean([r[key] for r in rows])), 3) if rows else None

    def med(key, rows):
        vals = [v for r in rows for v in r[key]]
        return round(float(np.median(vals)), 2) if vals else None

    def mean(key, rows):
        vals = [v for r in rows for v in r[key]]
        return round(float(np.mean(vals)), 3) if vals else None

    reason = [r for r in results if r["mode"] == "reason"]
    text = [r for r in results if r["mode"] == "steer_text"]
    visual = [r for r in results if r["mode"] == "steer_visual"]
    per_task = {t: rate([r for r in reason if r["task"] == t]) for t in dict.fromkeys(r["task"] for r in reason)}
    picks = [r for r in reason if r["task"] in PICK_TASKS]
    return {
        "success_rate": rate(reason),
        "success_rate_pick": rate(picks),
        "per_task": per_task,
        "steering_compliance_text": rate(text),
        "steering_compliance_visual": rate(visual),
        "steering_compliance_text_xy": rate(text, "success_xy"),
        "steering_compliance_visual_xy": rate(visual, "success_xy"),
        "trace_error_px": mean("trace_errors", reason),
        "first_point_error_px": mean("first_point_errors", reason),
        "depth_abs_rel": mean("depth_abs_rel", reason),
        "reason_ms": med("reason_ms", reason + text),
        "steer_text_ms": med("steer_ms", text),
        "steer_visual_ms": med("steer_ms", visual),
        "episodes": {"reason": len(reason), "steer_text": len(text), "steer_visual": len(visual)},
        "errors": [f"{r['task']}/{r['seed']}/{r['mode']}: {r['error']}" for r in results if r["error"]],
    }


def evaluate(model_path: Path, episodes: int, tasks: list[str] | None = None, steer: bool = True,
             workers: int = 2, device: str = "cpu", threads: int | None = None) -> tuple[dict, list[dict]]:
    """``threads``: torch (and Mesa) threads per worker; by default two for one worker and one each for more,
    which fills a 2-core machine. Give fewer when something else runs: oversubscribed cores make every
    OpenMP barrier spin, and a step then takes many times longer."""
    jobs = _jobs(tasks or list(TASKS), episodes, steer)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if workers <= 1:
        results = _run_jobs((str(model_path), device, jobs, threads or 2))
    else:
        chunks = [jobs[i::workers] for i in range(workers)]
        # not multiprocessing.Pool: it waits forever for the chunk of a worker that was killed
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            try:
                parts = list(pool.map(_run_jobs, [(str(model_path), device, c, threads or 1) for c in chunks]))
            except BrokenProcessPool as e:
                raise RuntimeError(f"an eval worker process died ({e}); if the system log says it was killed "
                                   f"for memory, use fewer --workers") from e
        results = [r for p in parts for r in p]
    return summarize(results), results


def _table(summary: dict) -> str:
    rows = [(k, summary[k]) for k in ("success_rate", "success_rate_pick", "steering_compliance_text",
                                      "steering_compliance_visual", "steering_compliance_text_xy",
                                      "steering_compliance_visual_xy", "trace_error_px", "first_point_error_px",
                                      "depth_abs_rel", "reason_ms", "steer_text_ms", "steer_visual_ms")]
    rows += [(f"success {t}", v) for t, v in summary["per_task"].items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.sim.eval", description=__doc__.split("\n")[0])
    p.add_argument("--model.path", dest="model_path", type=Path, default=DEFAULT_MODEL_PATH)
    p.add_argument("--model.device", dest="device", default="cpu")
    p.add_argument("--episodes", type=int, default=10, help="held-out episodes per task (and per steering mode)")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    p.add_argument("--no-steer", action="store_true", help="skip the steering-compliance episodes")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: 2 with one worker, 1 each with more)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--results", type=Path, default=None, help="also write every episode's result here (JSON)")
    args = p.parse_args(argv)
    tasks = args.tasks.split(",") if args.tasks else None
    for t in tasks or []:
        if t not in TASKS:
            print(f"error: unknown task {t!r}; known: {', '.join(TASKS)}", file=sys.stderr)
            return 2
    if not args.model_path.is_dir():
        print(f"error: checkpoint directory not found: {args.model_path} "
              "(train one with: python -m app.sim.train --out DIR)", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    summary, results = evaluate(args.model_path, args.episodes, tasks, not args.no_steer, args.workers, args.device,
                                args.threads)
    summary["model"] = str(args.model_path)
    if args.results:
        args.results.write_text(json.dumps(results, indent=1))
    print(json.dumps(summary) if args.json else _table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
