"""Backend selection: explicit MUJOCO_GL wins, probing finds a working one, a clear error otherwise."""
import os

import pytest

from app.sim import gl


def test_backend_is_set_before_mujoco_and_renders():
    assert os.environ["MUJOCO_GL"] == gl.BACKEND
    ok, why = gl.probe(gl.BACKEND)
    assert ok, why


def test_existing_env_is_respected(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setattr(gl, "probe", lambda b: pytest.fail("must not probe when MUJOCO_GL is set"))
    assert gl.choose_backend() == "osmesa"


def test_probe_order_and_first_working_backend_wins(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    tried = []

    def fake_probe(backend):
        tried.append(backend)
        return backend == "osmesa", "no display"
    monkeypatch.setattr(gl, "probe", fake_probe)
    assert gl.choose_backend() == "osmesa"
    assert tried == ["egl", "osmesa"]
    assert os.environ["MUJOCO_GL"] == "osmesa"


def test_no_backend_gives_a_clear_error(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    with pytest.raises(gl.GLBackendError, match="nonsense"):
        gl.choose_backend(candidates=("nonsense",))   # a real probe that fails in the child


def test_every_sim_module_imports_mujoco_through_gl():
    from pathlib import Path
    root = Path(gl.__file__).resolve().parents[1]
    offenders = [str(p) for p in root.rglob("*.py")
                 if p.name != "gl.py" and any(line.strip().startswith(("import mujoco", "from mujoco"))
                                              for line in p.read_text().splitlines())]
    assert offenders == []
