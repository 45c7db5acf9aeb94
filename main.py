"""MolmoAct steering station — command line.

    python main.py --headless --steps N [--instruction TEXT] [--steer text|visual|none]
                   [--model.path DIR] [--model.device cpu|cuda] [--model.unnorm_key KEY]

Until the session, devices and window land (issues 4-5), the headless mode is the runtime's
reasoning demo: each step renders a synthetic tabletop frame, runs ``reason()``, then re-decodes the
action with a moved trace (``steer_text`` by default, as an operator's drag would) and prints one JSON
object per step. No arm is connected yet, so ``sent`` is null.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "assets" / "tiny-molmoact"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python main.py", description="MolmoAct steering station")
    p.add_argument("--headless", action="store_true", help="run the loop without a window, JSON lines on stdout")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--instruction", default="pick up the red cube")
    p.add_argument("--steer", choices=["text", "visual", "none"], default="text",
                   help="after each reason(), re-decode with a moved trace in this mode")
    p.add_argument("--model.path", dest="model_path", default=str(DEFAULT_MODEL))
    p.add_argument("--model.device", dest="model_device", default="cpu")
    p.add_argument("--model.unnorm_key", dest="unnorm_key", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def demo_frame(step: int, size: int = 256) -> np.ndarray:
    """A synthetic tabletop: a red cube that drifts across a wooden table (stand-in for the sim camera)."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (200, 200, 205)
    img[size // 3:] = (150, 110, 70)
    x = 40 + (step * 17) % (size - 80)
    img[150:180, x:x + 30] = (210, 30, 30)
    img[120:150, 180:230] = (40, 60, 200)
    return img


def moved(trace: list[tuple[int, int]], dx: int = 30) -> list[tuple[int, int]]:
    """What an operator's drag does: the last waypoint moved sideways (clamped to the image)."""
    *head, (x, y) = trace
    return [*head, (min(255, max(0, x + dx if x + dx <= 255 else x - dx)), y)]


def run_headless(args: argparse.Namespace) -> int:
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.config import ConfigError
    from model.decoder import MolmoActDecoder
    from model.reasoning import Observation
    from model.tokenizer import TokenizerError

    try:
        ckpt = load_checkpoint(args.model_path, device=args.model_device)
    except (FileNotFoundError, CheckpointError, ConfigError, TokenizerError) as e:
        print(f"error: cannot load the model: {e}", file=sys.stderr)
        return 2
    decoder = MolmoActDecoder(ckpt)
    for step in range(args.steps):
        obs = Observation([demo_frame(step)], args.instruction, unnorm_key=args.unnorm_key)
        try:
            r = decoder.reason(obs)
        except KeyError as e:  # unknown unnorm key
            print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
            return 2
        result, timing = r, {"reason": round(r.timings_ms["total"], 2)}
        if args.steer != "none":
            edited = moved(r.trace)
            result = decoder.steer_text(edited) if args.steer == "text" else decoder.steer_visual(obs, edited)
            timing["steer"] = round(result.timings_ms["total"], 2)
        print(json.dumps({
            "step": step,
            "instruction": args.instruction,
            "mode": result.mode,
            "trace": [list(p) for p in result.trace],
            "model_trace": [list(p) for p in r.trace],
            "depth_codes": len(r.depth_codes),
            "action": [round(float(v), 6) for v in result.action],
            "sent": None,
            "timing_ms": timing,
        }), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.headless:
        return run_headless(args)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("no display: the operator window needs one; use --headless", file=sys.stderr)
        return 2
    print("the operator window is not built yet (issue 5); use --headless", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
