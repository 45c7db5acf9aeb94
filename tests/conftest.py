import os

# Before any QApplication exists (reference/gui.md): GUI tests run offscreen.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# No code path may reach the network; make any accidental hub call fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def xvfb_display():
    """A private X server (Xvfb) for tests that need a real display: GL rendering, screenshots."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not on PATH (scripts/install.sh installs it): this test needs an X server")
    for n in range(90, 190):
        sock = f"/tmp/.X11-unix/X{n}"
        if os.path.exists(sock) or os.path.exists(f"/tmp/.X{n}-lock"):
            continue
        proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while proc.poll() is None and not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None and os.path.exists(sock):
                yield f":{n}"
                return
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    pytest.skip("no free X display between :90 and :189")
