"""`python main.py` on the embedded default in a real X server: the window appears, is not blank,
and SIGTERM closes it the normal way (arm stopped, exit 0). Set STATION_SCREENSHOT=PATH to keep the
screenshot (that is how the README's picture is made)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def screenshot(display: str, path: Path) -> np.ndarray | None:
    import cv2
    proc = subprocess.run(["import", "-display", display, "-window", "root", str(path)],
                          capture_output=True, timeout=30)
    if proc.returncode != 0 or not path.is_file():
        return None
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else img[:, :, ::-1]


def estop_red_pixels(rgb: np.ndarray) -> int:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return int(((r > 180) & (g < 40) & (b < 40)).sum())


@pytest.mark.slow
def test_main_opens_a_window_that_is_not_blank(xvfb_display, tmp_path):
    if shutil.which("import") is None:
        pytest.skip("ImageMagick's `import` is not on PATH (scripts/install.sh installs it)")
    env = {**os.environ, "DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb",
           "XDG_DATA_HOME": str(tmp_path / "data")}          # the feedback store goes here, not in ~
    log = (tmp_path / "main.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    shot = tmp_path / "window.png"
    rgb = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1.0)
            rgb = screenshot(xvfb_display, shot)
            if rgb is not None and rgb.std() > 20 and estop_red_pixels(rgb) > 2000:
                time.sleep(3.0)                      # let the first frame and panels paint
                rgb = screenshot(xvfb_display, shot)
                break
        assert proc.poll() is None, (tmp_path / "main.log").read_text()
        assert rgb is not None, "no screenshot could be taken"
        colours = len(np.unique(rgb.reshape(-1, 3)[::7], axis=0))
        assert rgb.std() > 20 and colours > 500, f"the window looks blank (std {rgb.std():.1f}, {colours} colours)"
        assert estop_red_pixels(rgb) > 2000, "the e-stop button is not on screen"
        if os.environ.get("STATION_SCREENSHOT"):
            shutil.copy(shot, os.environ["STATION_SCREENSHOT"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "main.log").read_text()
        log.flush()
        output = (tmp_path / "main.log").read_text()
        assert "Traceback" not in output and "Error" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
