"""Crash-safe writes into a dataset root: stage everything, then commit with a journal.

A save never rewrites a stored file in place. Every new or grown file (data parquet, videos, the episode
table, info.json, stats.json, tasks.parquet) is first written under ``<root>/.staging/txn-*/`` and
fsynced. Then a journal (``COMMIT.json``, itself written to a temp file and renamed) names the files,
and each is moved over its target with ``os.replace`` (atomic on one filesystem), ``meta/info.json``
last. A failure before the journal exists (disk full, read-only disk, encoder error) leaves the
dataset exactly as it was and the staging folder is removed; a crash after it is rolled forward by
``recover()`` the next time a recorder opens the root. The staging folder is outside ``data/``,
``videos/`` and ``meta/``, so lerobot never sees it.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from .format import STAGING_DIR

JOURNAL = "COMMIT.json"


class RecordingError(RuntimeError):
    """A recording could not be started, written or read. The message says why, in words."""


def describe_os_error(e: BaseException, what: str) -> str:
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC or code == errno.EDQUOT:
        why = "the disk is full"
    elif code == errno.EROFS:
        why = "the file system is read-only"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    else:
        why = str(e) or type(e).__name__
    return f"{what}: {why}"


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temp file beside the target, fsync, rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=4, allow_nan=False) + "\n").encode("utf-8")


class Transaction:
    """Files staged for one save. ``path(rel)`` gives where to write the new version of ``rel``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / STAGING_DIR / f"txn-{uuid.uuid4().hex[:12]}"
        self.dir.mkdir(parents=True)
        self._targets: list[str] = []

    def path(self, rel: str) -> Path:
        p = self.dir / "files" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel not in self._targets:
            self._targets.append(rel)
        return p

    def write_bytes(self, rel: str, data: bytes) -> None:
        p = self.path(rel)
        with open(p, "wb") as f:
            f.write(data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json_bytes(obj))

    def commit(self) -> None:
        """Make the staged files durable, write the journal (the commit point), then move them in."""
        order = sorted(self._targets, key=lambda r: (r == "meta/info.json", r))   # info.json last
        for rel in order:
            fsync_file(self.dir / "files" / rel)
        write_bytes_atomic(self.dir / JOURNAL, json_bytes({"files": order}))
        apply_journal(self.root, self.dir)

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def apply_journal(root: Path, txn_dir: Path) -> None:
    files = json.loads((txn_dir / JOURNAL).read_text(encoding="utf-8"))["files"]
    for rel in files:
        src = txn_dir / "files" / rel
        if not src.exists():
            continue                                 # moved already (a roll-forward after a crash)
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        fsync_dir(dst.parent)
    shutil.rmtree(txn_dir, ignore_errors=True)


def pending_transactions(root: Path) -> list[Path]:
    staging = Path(root) / STAGING_DIR
    if not staging.is_dir():
        return []
    return sorted(p for p in staging.iterdir() if p.is_dir() and p.name.startswith("txn-"))


def recover(root: Path) -> list[str]:
    """Finish saves that reached their journal; drop the rest (and stale episode buffers).

    Returns what was done, one line each (for the log)."""
    done = []
    staging = Path(root) / STAGING_DIR
    for txn in pending_transactions(root):
        if (txn / JOURNAL).exists():
            apply_journal(Path(root), txn)
            done.append(f"completed an interrupted save ({txn.name})")
        else:
            shutil.rmtree(txn, ignore_errors=True)
            done.append(f"dropped an unfinished save ({txn.name})")
    if staging.is_dir():
        for ep in staging.iterdir():
            if ep.is_dir() and ep.name.startswith("episode-"):
                shutil.rmtree(ep, ignore_errors=True)
                done.append(f"dropped an unsaved episode buffer ({ep.name})")
    return done
