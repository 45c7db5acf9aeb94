"""The bench CLI prints one JSON object with the documented keys."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_json_cli():
    out = subprocess.run([sys.executable, "-m", "app.sim.bench", "--json", "--frames", "3", "--steps", "5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("render_fps_320x240", "render_fps_640x480", "control_step_ms"):
        assert isinstance(res[key], float) and res[key] > 0
    assert res["gl_backend"] in ("egl", "osmesa", "glfw", "glx")
