"""Checkpoint directories the tests make from the bundled tiny one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

TINY_MODEL = Path(__file__).resolve().parents[1] / "assets" / "tiny-molmoact"


def tiny_with_cameras(tmp_path: Path, cameras) -> Path:
    """A copy of the tiny checkpoint whose config.json says it takes these images (``cameras`` as written,
    malformed values included)."""
    out = tmp_path / "ck"
    shutil.copytree(TINY_MODEL, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["cameras"] = cameras
    (out / "config.json").write_text(json.dumps(cfg))
    return out
