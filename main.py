"""MolmoAct steering station — command line.

    python main.py [--run-mode step|preview|confirm|auto] [device and model flags]   the operator window
    python main.py --headless --steps N [--instruction TEXT] [--steer text|visual|none] [flags]

Flags, in lerobot's dotted style: [--camera.type sim|realsense|recording] [--camera.serial S]
[--camera.path FILE] [--arm.type none|sim|xarm|ur|franka] [--arm.host ADDR] [--arm.enable]
[--model.path DIR] [--model.device cpu|cuda] [--model.unnorm_key KEY].

Both front ends drive the same ``app.session.Session``. Headless, each step is what an operator does
in step mode: Step (reason on a fresh frame), drag the last waypoint (re-decoded with ``steer_text``
by default), Go (through the safety guard; the arm moves only with ``--arm.enable``). One JSON
object per step on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from app.config import DEFAULT_MODEL_PATH


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python main.py", description="MolmoAct steering station")
    p.add_argument("--headless", action="store_true", help="run the loop without a window, JSON lines on stdout")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--instruction", default="pick up the red cube")
    p.add_argument("--steer", choices=["text", "visual", "none"], default="text",
                   help="after each reason(), re-decode with a moved trace in this mode")
    p.add_argument("--model.path", dest="model_path", default=str(DEFAULT_MODEL_PATH))
    p.add_argument("--model.device", dest="model_device", default="cpu")
    p.add_argument("--model.unnorm_key", dest="unnorm_key", default=None)
    p.add_argument("--camera.type", dest="camera_type", default="sim")
    p.add_argument("--camera.serial", dest="camera_serial", default=None)
    p.add_argument("--camera.path", dest="camera_path", default=None)
    p.add_argument("--camera.wrist_serial", dest="camera_wrist_serial", default=None,
                   help="realsense: the wrist camera, for a model that takes a wrist image (see its config.json 'cameras')")
    p.add_argument("--camera.wrist_path", dest="camera_wrist_path", default=None,
                   help="recording: the wrist camera's recording, likewise")
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
    p.add_argument("--feedback.path", dest="feedback_path", default=None,
                   help="the preference store (SQLite); default ~/.local/share/molmoact-station/feedback.sqlite")
    p.add_argument("--feedback.operator", dest="operator", default="operator", help="who answers (stored)")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="record every step as LeRobot v3 episodes in DIR (continues an existing dataset)")
    p.add_argument("--record.fps", dest="record_fps", type=int, default=None,
                   help="the dataset's nominal fps (default: the closed-loop rate, 2); real times are in step.elapsed")
    p.add_argument("--replay", default=None, metavar="DIR", help="open a recorded dataset in the replay view")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-mode", dest="run_mode", choices=["step", "preview", "confirm", "auto"], default="step",
                   help="the window's starting run mode")
    p.add_argument("--list-cameras", action="store_true", help="list connected RealSense serials and exit")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def station_config(args: argparse.Namespace):
    from app.config import (ArmConfig, CameraConfig, FeedbackConfig, ModelConfig, SimTaskConfig,
                            StationConfig)
    arm_type = args.arm_type or ("sim" if args.camera_type == "sim" else "none")
    return StationConfig(
        camera=CameraConfig(type=args.camera_type, serial=args.camera_serial, path=args.camera_path,
                            wrist_serial=args.camera_wrist_serial, wrist_path=args.camera_wrist_path,
                            width=args.camera_width, height=args.camera_height, fps=args.camera_fps),
        arm=ArmConfig(type=arm_type, host=args.arm_host, enable=args.arm_enable),
        sim=SimTaskConfig(task=args.sim_task, seed=args.seed),
        model=ModelConfig(path=args.model_path, device=args.model_device, unnorm_key=args.unnorm_key),
        feedback=FeedbackConfig(**({"path": args.feedback_path} if args.feedback_path else {}),
                                operator=args.operator))


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


def moved(trace: list[tuple[int, int]], dx: int = 30) -> list[tuple[int, int]]:
    """What an operator's drag does: the last waypoint moved sideways (clamped to the image)."""
    *head, (x, y) = trace
    return [*head, (min(255, max(0, x + dx if x + dx <= 255 else x - dx)), y)]


def session_config(args: argparse.Namespace, run_mode: str = "step"):
    from app.session import SessionConfig
    return SessionConfig(instruction=args.instruction, run_mode=run_mode,
                         steer_mode="visual" if args.steer == "visual" else "text")


def record_fps(args: argparse.Namespace, session_cfg) -> int:
    """LeRobot's nominal rate: the closed loop's step rate unless given (step/confirm have no fixed rate;
    the real times are in the ``step.elapsed`` column)."""
    return args.record_fps or max(1, round(session_cfg.auto_rate_hz))


def _round(values) -> list[float] | None:
    return None if values is None else [round(float(v), 6) for v in values]


def run_headless(args: argparse.Namespace) -> int:
    """The same session as the window, driven as an operator would in step mode: Step, drag the last
    waypoint (unless --steer none), Go. Go is refused by the guard unless --arm.enable was given."""
    from app.session import ErrorEvent
    from app.station import StationError, open_session

    try:
        cfg = station_config(args)
        safety = safety_config(args, cfg.arm)      # refuse an unsafe set-up before opening anything
        session = open_session(cfg, session_config(args), safety)
    except (ValueError, StationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    errors: list[ErrorEvent] = []
    session.subscribe(lambda ev: errors.append(ev) if isinstance(ev, ErrorEvent) else None)
    recorder = None
    if args.record:
        from app.recording.session_recorder import SessionRecorder
        recorder = SessionRecorder(session, args.record, fps=record_fps(args, session.config))
    session.start(frames=False)
    step_no = 0

    def settle() -> None:
        if not session.wait_idle(600):
            raise TimeoutError("the session did not finish a step within 600 s")
        failed = [e for e in errors if e.level == "error"]
        if failed:
            raise RuntimeError(f"{failed[0].source}: {failed[0].message}")

    try:
        for step_no in range(args.steps):
            notes = len(errors)
            session.step()
            settle()
            r = session.reasoning
            if args.steer != "none":
                session.edit_trace(moved(r.trace), final=True)
                settle()
            session.go()
            settle()
            step = session.last_step
            arm = session.arm
            print(json.dumps({
                "step": step_no,
                "instruction": session.instruction,
                "mode": step.mode,
                "trace": [list(p) for p in step.trace],
                "model_trace": [list(p) for p in r.trace],
                "depth_codes": len(r.depth_codes),
                "action": _round(step.action),
                "command": _round(step.command),
                "sent": _round(step.sent),
                "status": step.status,
                "safety": step.safety + [f"{e.source}: {e.message}" for e in errors[notes:]],
                "camera": session.frame.serial if session.frame is not None else None,
                "arm": None if arm is None else {"name": arm.name, "enabled": arm.enabled},
                "timing_ms": step.timing_ms,
            }), flush=True)
            session.clear_edit()
    except KeyboardInterrupt:                          # Ctrl-C is the headless e-stop
        session.estop("Ctrl-C")
        print(f"e-stop: interrupted at step {step_no}; arm stopped", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        session.close()
        if recorder is not None:
            recorder.close()
    if recorder is not None and recorder.error:
        print(f"error: {recorder.error}", file=sys.stderr)
        return 2
    return 0


def run_window(args: argparse.Namespace) -> int:
    try:
        cfg = station_config(args)
        safety = safety_config(args, cfg.arm)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from widgets.app import run
    sc = session_config(args, args.run_mode)
    return run(cfg, sc, safety, record_dir=args.record, record_fps=record_fps(args, sc))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_cameras:
        from app.devices.realsense import list_realsense_devices
        devices = list_realsense_devices()
        print("\n".join(f"{d.serial}  {d.name}" for d in devices) or "no RealSense device found")
        return 0
    if args.headless:
        return run_headless(args)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("QT_QPA_PLATFORM") in ("offscreen", "vnc")):
        what = "the replay view needs one" if args.replay else "the operator window needs one; use --headless"
        print(f"no display: {what}", file=sys.stderr)
        return 2
    if args.replay:
        from widgets.replay_view import run
        return run(args.replay)
    return run_window(args)


if __name__ == "__main__":
    sys.exit(main())
