"""The command-line contract of DESIGN.md, as far as it is built (headless JSON lines, exit codes)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import main

ROOT = Path(__file__).resolve().parents[1]


def test_headless_prints_one_json_object_per_step(capsys):
    assert main.main(["--headless", "--steps", "2", "--instruction", "pick up the blue block"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert {"step", "instruction", "mode", "trace", "depth_codes", "action", "sent", "timing_ms"} <= set(rec)
        assert rec["step"] == i and rec["instruction"] == "pick up the blue block"
        assert rec["mode"] == "steer_text" and rec["depth_codes"] == 100 and len(rec["action"]) == 7
        assert 1 <= len(rec["trace"]) <= 5 and rec["trace"] != rec["model_trace"]
        assert rec["timing_ms"]["reason"] > 0 and rec["timing_ms"]["steer"] > 0
        # the embedded default: the simulated cell; no motion until the operator enables the arm
        assert rec["camera"] == "sim-front" and rec["arm"] == {"name": "sim-panda", "enabled": False}
        assert rec["sent"] is None and len(rec["command"]) == 7
        assert any("disabled" in reason for reason in rec["safety"])


def test_enabled_sim_arm_gets_the_guarded_command(capsys):
    assert main.main(["--headless", "--steps", "2", "--arm.enable"]) == 0
    for line in capsys.readouterr().out.strip().splitlines():
        rec = json.loads(line)
        assert rec["arm"]["enabled"] is True and len(rec["sent"]) == 7
        step = sum(v * v for v in rec["sent"][:3]) ** 0.5
        assert step <= 0.03 + 1e-6          # the guard's per-step translation cap
        if step < sum(v * v for v in rec["command"][:3]) ** 0.5 - 1e-6:
            assert any(r.startswith("max_translation") for r in rec["safety"])


def test_bad_device_flags_exit_2(capsys, tmp_path):
    assert main.main(["--headless", "--camera.type", "webcam"]) == 2
    assert "--camera.type" in capsys.readouterr().err
    assert main.main(["--headless", "--camera.type", "recording", "--camera.path", str(tmp_path / "x.bag")]) == 2
    assert "no such recording" in capsys.readouterr().err
    assert main.main(["--headless", "--sim.task", "juggle"]) == 2
    assert "juggle" in capsys.readouterr().err


def test_headless_without_steering_and_with_visual(capsys):
    assert main.main(["--headless", "--steps", "1", "--steer", "none"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["mode"] == "reason" and "steer" not in rec["timing_ms"]
    assert main.main(["--headless", "--steps", "1", "--steer", "visual"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "steer_visual"


def test_bad_model_path_and_unnorm_key_exit_2(capsys, tmp_path):
    assert main.main(["--headless", "--model.path", str(tmp_path / "missing")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
    assert main.main(["--headless", "--model.unnorm_key", "bridge_orig"]) == 2
    assert "bridge_orig" in capsys.readouterr().err


def test_no_display_says_so_and_exits_2():
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(ROOT / "main.py")], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "display" in proc.stderr


def test_bundled_checkpoint_is_the_writer_output(tmp_path):
    """assets/tiny-molmoact is regenerable: `python -m model.checkpoint write-tiny DIR` with seed 0."""
    from model.checkpoint import write_tiny_checkpoint
    fresh = write_tiny_checkpoint(tmp_path / "tiny")
    bundled = ROOT / "assets" / "tiny-molmoact"
    names = sorted(p.name for p in bundled.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir())
    for name in names:
        assert (bundled / name).read_bytes() == (fresh / name).read_bytes(), name


SHARED_BAG = ROOT.parent / "shared" / "data" / "realsense" / "single_depth_color_640x480.bag"


@pytest.mark.skipif(not SHARED_BAG.is_file(), reason="the shared D435 recording is not beside the repo")
def test_headless_on_a_real_d435_recording(capsys):
    # the bundled sim model takes a wrist image too: with one recording, a clear refusal naming the flag
    assert main.main(["--headless", "--steps", "1", "--camera.type", "recording",
                      "--camera.path", str(SHARED_BAG)]) == 2
    assert "--camera.wrist_path" in capsys.readouterr().err
    assert main.main(["--headless", "--steps", "1", "--camera.type", "recording", "--camera.path", str(SHARED_BAG),
                      "--model.path", str(ROOT / "assets" / "tiny-molmoact")]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["camera"] == "728612070259" and rec["arm"] is None and rec["sent"] is None


def test_real_arm_cannot_be_enabled_without_the_cells_workspace_box(capsys):
    # refused before any device is opened (no camera or robot needed to check this)
    assert main.main(["--headless", "--camera.type", "realsense", "--arm.type", "ur", "--arm.enable"]) == 2
    assert "workspace box" in capsys.readouterr().err
    assert main.main(["--headless", "--arm.enable", "--safety.workspace_min", "1,2"]) == 2
    assert "three numbers" in capsys.readouterr().err


def test_headless_cli_prints_five_json_lines_as_design_md_says():
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--headless", "--steps", "5"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert {"step", "instruction", "mode", "trace", "depth_codes", "action", "sent", "timing_ms"} <= set(rec)
        assert rec["step"] == i and rec["mode"] in ("reason", "steer_text", "steer_visual")
        assert all(0 <= v <= 255 for p in rec["trace"] for v in p) and rec["depth_codes"] == 100
        assert len(rec["action"]) == 7 and rec["sent"] is None        # the arm was not enabled
        assert rec["timing_ms"]["reason"] > 0 and rec["timing_ms"]["steer"] > 0


def test_headless_record_writes_a_lerobot_episode(capsys, tmp_path):
    from app.recording.reader import EpisodeReader
    root = tmp_path / "ds"
    assert main.main(["--headless", "--steps", "2", "--arm.enable", "--record", str(root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 1 and info["total_frames"] == 2
    reader = EpisodeReader(root)
    for i, line in enumerate(lines):
        rec, f = json.loads(line), reader.frame(0, i)
        assert f.sent and [round(float(v), 6) for v in f.action] == rec["sent"]     # what the arm got
        assert [list(p) for p in f.trace] == rec["trace"] and f.mode == rec["mode"]
    reader.close()


def test_headless_record_into_a_bad_root_exits_2(capsys, tmp_path):
    bad = tmp_path / "ds"
    (bad / "meta").mkdir(parents=True)
    (bad / "meta" / "info.json").write_text("{not json")
    assert main.main(["--headless", "--steps", "1", "--record", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
    assert (bad / "meta" / "info.json").read_text() == "{not json"


def test_headless_record_keeps_one_frame_per_observation(capsys, tmp_path):
    """Without an arm each step is shown twice (the model's action, then the steered one): one frame."""
    root = tmp_path / "ds"
    assert main.main(["--headless", "--steps", "2", "--arm.type", "none", "--record", str(root)]) == 0
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_frames"] == 2 and info["fps"] == 2
