"""MolmoAct steering station — command line.

    python main.py --headless --steps N [--instruction TEXT] [--steer text|visual|none]
                   [--camera.type sim|realsense|recording] [--camera.serial S] [--camera.path FILE]
                   [--arm.type none|sim|xarm|ur|franka] [--arm.host ADDR] [--arm.enable]
                   [--model.path DIR] [--model.device cpu|cuda] [--model.unnorm_key KEY]

Until the session and window land (issue 5), the headless mode is the runtime's loop on the chosen
devices: each step reads a frame, runs ``reason()``, re-decodes the action with a moved trace
(``steer_text`` by default, as an operator's drag would), maps it to the arm's command frame, passes
it through the safety guard and — only with ``--arm.enable`` — sends it. One JSON object per step.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
    p.add_argument("--camera.type", dest="camera_type", default="sim")
    p.add_argument("--camera.serial", dest="camera_serial", default=None)
    p.add_argument("--camera.path", dest="camera_path", default=None)
    p.add_argument("--camera.width", dest="camera_width", type=int, default=640)
    p.add_argument("--camera.height", dest="camera_height", type=int, default=480)
    p.add_argument("--camera.fps", dest="camera_fps", type=int, default=30)
    p.add_argument("--arm.type", dest="arm_type", default=None,
                   help="default: sim with the sim camera, none otherwise")
    p.add_argument("--arm.host", dest="arm_host", default=None)
    p.add_argument("--arm.enable", dest="arm_enable", action="store_true",
                   help="the operator's go: without it nothing moves and 'sent' is null")
    p.add_argument("--safety.workspace_min", dest="workspace_min", default=None,
                   help="x,y,z metres in the arm's base frame; required to enable a real arm")
    p.add_argument("--safety.workspace_max", dest="workspace_max", default=None)
    p.add_argument("--sim.task", dest="sim_task", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list-cameras", action="store_true", help="list connected RealSense serials and exit")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def station_config(args: argparse.Namespace):
    from app.config import ArmConfig, CameraConfig, SimTaskConfig, StationConfig
    arm_type = args.arm_type or ("sim" if args.camera_type == "sim" else "none")
    return StationConfig(
        camera=CameraConfig(type=args.camera_type, serial=args.camera_serial, path=args.camera_path,
                            width=args.camera_width, height=args.camera_height, fps=args.camera_fps),
        arm=ArmConfig(type=arm_type, host=args.arm_host, enable=args.arm_enable),
        sim=SimTaskConfig(task=args.sim_task, seed=args.seed))


def parse_xyz(text: str, flag: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ValueError(f"{flag} needs three numbers x,y,z in metres, got {text!r}")
    return values


def safety_config(args: argparse.Namespace, arm_cfg):
    """The guard's config. A real arm may only be enabled with the cell's own workspace box."""
    from app.safety import SafetyConfig
    box = {}
    if args.workspace_min:
        box["workspace_min"] = parse_xyz(args.workspace_min, "--safety.workspace_min")
    if args.workspace_max:
        box["workspace_max"] = parse_xyz(args.workspace_max, "--safety.workspace_max")
    if arm_cfg.enable and arm_cfg.type not in ("none", "sim") and len(box) < 2:
        raise ValueError(f"--arm.type={arm_cfg.type} with --arm.enable needs the cell's workspace box: "
                         "--safety.workspace_min=x,y,z --safety.workspace_max=x,y,z (metres, base frame)")
    return SafetyConfig(**box)


def close_devices(camera, arm, cell) -> None:
    """Stop the arm first, then release everything; one failure must not skip the rest."""
    steps = []
    if arm is not None:
        steps += [arm.stop, arm.disconnect]
    if camera is not None:
        steps.append(camera.disconnect)
    if cell is not None and hasattr(cell, "close"):
        steps.append(cell.close)
    for step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - report and keep releasing
            print(f"warning: {getattr(step, '__qualname__', step)} failed: {e}", file=sys.stderr)


def moved(trace: list[tuple[int, int]], dx: int = 30) -> list[tuple[int, int]]:
    """What an operator's drag does: the last waypoint moved sideways (clamped to the image)."""
    *head, (x, y) = trace
    return [*head, (min(255, max(0, x + dx if x + dx <= 255 else x - dx)), y)]


def run_headless(args: argparse.Namespace) -> int:
    from app.devices.action_adapter import ActionAdapter
    from app.devices.arm import ArmError
    from app.devices.camera import CameraError
    from app.devices.factory import make_arm, make_camera, make_sim_cell
    from app.safety import SafetyGuard
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.config import ConfigError
    from model.decoder import MolmoActDecoder, NonFiniteLogitsError
    from model.reasoning import Observation
    from model.tokenizer import TokenizerError

    try:
        cfg = station_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        ckpt = load_checkpoint(args.model_path, device=args.model_device)
    except (FileNotFoundError, CheckpointError, ConfigError, TokenizerError) as e:
        print(f"error: cannot load the model: {e}", file=sys.stderr)
        return 2
    decoder = MolmoActDecoder(ckpt)
    cell = camera = arm = adapter = None
    try:
        safety_cfg = safety_config(args, cfg.arm)      # refuse an unsafe set-up before opening anything
        cell = make_sim_cell(cfg.camera, cfg.sim, args.instruction) if cfg.camera.type == "sim" else None
        camera = make_camera(cfg.camera, cell)
        camera.connect()
        arm = make_arm(cfg.arm, cell)
        if arm is not None:
            arm.connect()
            if cfg.arm.enable:
                arm.enable()
    except (KeyError, ValueError, CameraError, ArmError) as e:
        close_devices(camera, arm, cell)
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    step_no = 0
    try:
        guard = SafetyGuard(safety_cfg)
        for step_no in range(args.steps):
            stale = guard.tick()                      # the watchdog: no fresh command in time → hold
            if stale is not None and arm is not None and arm.enabled:
                arm.hold()
            frame = camera.read(timeout_s=5.0)
            obs = Observation([frame.rgb], args.instruction, unnorm_key=args.unnorm_key)
            r = decoder.reason(obs)
            result, timing = r, {"reason": round(r.timings_ms["total"], 2)}
            if args.steer != "none":
                edited = moved(r.trace)
                result = decoder.steer_text(edited) if args.steer == "text" else decoder.steer_visual(obs, edited)
                timing["steer"] = round(result.timings_ms["total"], 2)
            command, sent, safety = None, None, [] if stale is None else [f"{stale.rule}: {stale.reason}"]
            if arm is not None:
                adapter = adapter or ActionAdapter.for_arm(cfg.arm.type, r.unnorm_key)
                state = arm.state()
                command = adapter.map(result.action, state.ee_rpy)
                verdict = guard.check(command, state)
                safety += verdict.reasons
                if arm.enabled and verdict.allowed:
                    done = arm.send_action(verdict.action)
                    sent = [round(float(v), 6) for v in done.sent]
                    safety += [f"arm: {reason}" for reason in done.clipped]   # the arm's own limits
                elif arm.enabled:
                    arm.hold()
            print(json.dumps({
                "step": step_no,
                "instruction": args.instruction,
                "mode": result.mode,
                "trace": [list(p) for p in result.trace],
                "model_trace": [list(p) for p in r.trace],
                "depth_codes": len(r.depth_codes),
                "action": [round(float(v), 6) for v in result.action],
                "command": None if command is None else [round(float(v), 6) for v in command],
                "sent": sent,
                "safety": safety,
                "camera": frame.serial,
                "arm": None if arm is None else {"name": arm.name, "enabled": arm.enabled},
                "timing_ms": timing,
            }), flush=True)
    except KeyboardInterrupt:                          # Ctrl-C is the headless e-stop
        print(f"e-stop: interrupted at step {step_no}; arm stopped", file=sys.stderr)
        return 130
    except (KeyError, ValueError, CameraError, ArmError, NonFiniteLogitsError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    finally:
        close_devices(camera, arm, cell)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_cameras:
        from app.devices.realsense import list_realsense_devices
        devices = list_realsense_devices()
        print("\n".join(f"{d.serial}  {d.name}" for d in devices) or "no RealSense device found")
        return 0
    if args.headless:
        return run_headless(args)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("no display: the operator window needs one; use --headless", file=sys.stderr)
        return 2
    print("the operator window is not built yet (issue 5); use --headless", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
