"""Pick MuJoCo's headless OpenGL backend before mujoco is first imported.

MuJoCo reads ``MUJOCO_GL`` once, at import time, so the choice must happen first. An explicit
``MUJOCO_GL`` is respected; otherwise ``egl`` then ``osmesa`` are probed in a subprocess (a failed
backend can crash or poison the importing process, a child cannot) and the first that renders wins.
Every module in ``app`` that needs mujoco imports it from here: ``from app.sim.gl import mujoco``.
"""
from __future__ import annotations

import os
import subprocess
import sys

CANDIDATES = ("egl", "osmesa")

_PROBE = """
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size="0.1"/></worldbody></mujoco>')
r = mujoco.Renderer(m, 8, 8)
assert r.render().shape == (8, 8, 3)
r.close()
print("ok")
"""


class GLBackendError(RuntimeError):
    """No headless OpenGL backend could render; the message lists what each probe said."""


def probe(backend: str, timeout_s: float = 30.0) -> tuple[bool, str]:
    """Render one tiny frame with ``backend`` in a child process; return (ok, diagnostic)."""
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend in ("egl", "osmesa"):
        env["PYOPENGL_PLATFORM"] = backend
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                             text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    ok = res.returncode == 0 and "ok" in res.stdout
    tail = (res.stderr or res.stdout).strip().splitlines()
    return ok, "" if ok else (tail[-1] if tail else f"exit code {res.returncode}")


def choose_backend(candidates: tuple[str, ...] = CANDIDATES) -> str:
    """Return the backend to use, setting ``MUJOCO_GL`` (and PyOpenGL's platform) if unset."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        return chosen
    failures = []
    for backend in candidates:
        ok, why = probe(backend)
        if ok:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        failures.append(f"{backend}: {why}")
    raise GLBackendError(
        "No headless OpenGL backend works for MuJoCo (" + "; ".join(failures) + "). Install the Mesa "
        "EGL libraries (libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0) or libosmesa6, or set "
        "MUJOCO_GL yourself.")


if "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ:
    raise GLBackendError("mujoco was imported before app.sim.gl chose a backend; import "
                         "mujoco through app.sim.gl")

BACKEND = choose_backend()

import mujoco  # noqa: E402  (must follow the backend choice)

__all__ = ["BACKEND", "GLBackendError", "choose_backend", "mujoco", "probe"]
