"""The SQLite preference store: round trips, images once, transactions, migrations, and every bad input
(newer schema, corrupt or foreign file, read-only, full disk, locked) refused with a clear StoreError
while nothing already stored is lost."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.feedback import store as store_mod
from app.feedback.records import Comparison, Outcome, Rating
from app.feedback.store import (APPLICATION_ID, SCHEMA_VERSION, NotAFeedbackStoreError, PreferenceStore,
                                SchemaOutdatedError, SchemaTooNewError, StoreBusyError, StoreCorruptError,
                                StoreError, StoreFullError, StoreNotFoundError, StoreReadOnlyError)

from .factories import candidate, comparison, image, rating

ROOT = Path(__file__).resolve().parents[3]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def filled(path: Path, n: int = 3) -> list[Comparison]:
    cs = [comparison(i, answer=("A", "B", "tie", "both_bad")[i % 4]) for i in range(n)]
    with PreferenceStore(path) as s:
        for c in cs:
            s.add_comparison(c)
    return cs


def raw_count(path: Path, table: str = "comparisons") -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ round trips

def test_comparisons_and_ratings_round_trip(tmp_path):
    db = tmp_path / "sub" / "feedback.sqlite"                 # the folder is created
    cs = [comparison(0, answer="A"),
          comparison(1, answer="B", kind="two_checkpoints", a="checkpoint:a", b="checkpoint:b", unnorm_key=None,
                     comment="B grasps, A misses ✓", recording="/data/rec1", episode_index=3, frame_index=41),
          comparison(2, answer="tie", kind="two_modes", a="steer_text", b="steer_visual"),
          comparison(3, answer="both_bad", kind="two_samples", a="sample:1", b="sample:2",
                     img=image(3, 480, 640))]
    rs = [rating(0), rating(1, depth_score=None, note="", candidate=candidate("operator_edit", 5, mode="steer_visual",
                                                                             sent=None, action_normalized=None)),
          rating(2, recording="/data/rec1", episode_index=0, frame_index=0)]
    with PreferenceStore(db) as s:
        ids = [s.add_comparison(c) for c in cs]
        rids = [s.add_rating(r) for r in rs]
        assert ids == sorted(ids) and [c.id for c in cs] == ids and [r.id for r in rs] == rids
    with PreferenceStore(db) as s:                             # a fresh connection reads them back
        back = list(s.comparisons())
        rback = list(s.ratings())
        assert s.schema_version == SCHEMA_VERSION
    assert back == cs and [c.id for c in back] == ids
    assert rback == rs and [r.id for r in rback] == rids
    assert back[1].a.label == "checkpoint:a" and back[1].episode_index == 3 and back[1].unnorm_key is None
    assert back[3].image.shape == (480, 640, 3) and back[3].image.dtype == np.uint8
    assert rback[1].depth_score is None and rback[1].candidate.sent is None
    assert rback[0].candidate.depth_codes == tuple(range(100))


def test_equality_would_catch_a_lost_field(tmp_path):
    """The round-trip check can fail: a changed comment or pixel makes the records differ."""
    c = comparison(0, comment="first")
    with PreferenceStore(tmp_path / "f.db") as s:
        s.add_comparison(c)
        s._conn.execute("UPDATE comparisons SET comment = 'edited'")
        assert next(s.comparisons()) != c


def test_pragmas_and_header(tmp_path):
    db = tmp_path / "f.db"
    with PreferenceStore(db) as s:
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2          # FULL
        assert s._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


def test_images_are_stored_once_by_content(tmp_path):
    shared = image(7, 48, 64)
    with PreferenceStore(tmp_path / "f.db") as s:
        s.add_comparison(comparison(0, img=shared))
        s.add_comparison(comparison(1, img=shared.copy()))
        s.add_rating(rating(2, img=shared))
        assert s.counts()["images"] == 1
        s.add_comparison(comparison(3, img=image(8, 48, 64)))
        s.add_comparison(comparison(4, img=shared[:, :32].copy()))           # same pixels, other shape
        assert s.counts()["images"] == 3
        sha = store_mod.image_sha256(shared)
        assert np.array_equal(s.image(sha), shared)
        assert s.image_png(sha).startswith(b"\x89PNG")
        with pytest.raises(KeyError):
            s.image("0" * 64)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    """One transaction per answer: a failure after the image and candidate A were inserted rolls all back."""
    db = tmp_path / "f.db"
    filled(db, 2)
    calls = []
    real = PreferenceStore._put_candidate

    def flaky(conn, c):
        calls.append(c)
        if len(calls) == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real(conn, c)

    monkeypatch.setattr(PreferenceStore, "_put_candidate", staticmethod(flaky))
    with PreferenceStore(db) as s:
        with pytest.raises(StoreError, match="disk I/O error"):
            s.add_comparison(comparison(5, img=image(99)))
        monkeypatch.undo()
        assert s.counts()["comparisons"] == 2 and s.counts()["images"] == 2
        assert s._conn.execute("SELECT count(*) FROM candidates").fetchone()[0] == 4
        assert not s._conn.in_transaction
        s.add_comparison(comparison(6))                                 # the store is still usable
        assert s.counts()["comparisons"] == 3


def test_counts_outcomes_and_filters(tmp_path):
    with PreferenceStore(tmp_path / "f.db") as s:
        s.add_comparison(comparison(0, answer="A"))
        s.add_comparison(comparison(1, answer="B", kind="two_modes", a="steer_text", b="steer_visual"))
        s.add_comparison(comparison(2, answer="tie"))
        s.add_comparison(comparison(3, answer="both_bad"))
        s.add_rating(rating(0))
        assert s.counts() == {"comparisons": 4, "ratings": 1, "images": 4, "A": 1, "B": 1, "tie": 1, "both_bad": 1}
        assert s.outcomes() == [Outcome("model", "operator_edit", "A", "model_vs_edit"),
                                Outcome("steer_text", "steer_visual", "B", "two_modes"),
                                Outcome("model", "operator_edit", "tie", "model_vs_edit"),
                                Outcome("model", "operator_edit", "both_bad", "model_vs_edit")]
        assert [o.answer for o in s.outcomes(kind="two_modes")] == ["B"]
        assert [c.answer for c in s.comparisons(answers=("A", "B"))] == ["A", "B"]
        assert [c.answer for c in s.comparisons(kind="model_vs_edit", answers=["tie", "both_bad"])] == ["tie",
                                                                                                         "both_bad"]
        assert list(s.comparisons(answers=())) == []
        with pytest.raises(ValueError, match="kind"):
            s.outcomes(kind="nope")
        with pytest.raises(ValueError, match="answer"):
            list(s.comparisons(answers=["maybe"]))


def test_iteration_pages_through_many_rows_while_writing(tmp_path):
    n = store_mod.PAGE_ROWS * 2 + 5
    with PreferenceStore(tmp_path / "f.db") as s:
        for i in range(n):
            s.add_comparison(comparison(i, img=image(i, 4, 4)))
        seen = []
        for c in s.comparisons():
            seen.append(c.id)
            if len(seen) == 3:
                s.add_comparison(comparison(999, img=image(1, 4, 4)))   # a write between pages does not deadlock
        assert seen == sorted(seen) and len(seen) == n + 1


def test_delete_undoes_an_answer(tmp_path):
    shared = image(1)
    with PreferenceStore(tmp_path / "f.db") as s:
        keep = s.add_comparison(comparison(0, img=shared))
        gone = s.add_comparison(comparison(1, img=shared))
        alone = s.add_comparison(comparison(2))
        rid = s.add_rating(rating(3))
        assert s.delete_comparison(gone) and not s.delete_comparison(gone)
        assert s.counts()["images"] == 3                              # shared image still used by `keep`
        assert s.delete_comparison(alone)
        assert s.counts()["images"] == 2
        assert s.delete_rating(rid)
        assert s.counts() == {"comparisons": 1, "ratings": 0, "images": 1, "A": 1, "B": 0, "tie": 0, "both_bad": 0}
        assert s._conn.execute("SELECT count(*) FROM candidates").fetchone()[0] == 2
        assert [c.id for c in s.comparisons()] == [keep]


def test_threads_share_one_store(tmp_path):
    with PreferenceStore(tmp_path / "f.db") as s:
        errors = []

        def work(k):
            try:
                for i in range(15):
                    s.add_comparison(comparison(k * 100 + i, img=image(k * 100 + i, 4, 4)))
            except Exception as exc:                                  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and s.counts()["comparisons"] == 60 and s.check() == "ok"


def test_closed_store_says_so(tmp_path):
    s = PreferenceStore(tmp_path / "f.db")
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.counts()
    with pytest.raises(TypeError):
        PreferenceStore(tmp_path / "g.db").add_comparison(rating(0))


# ------------------------------------------------------------------------------------------ migrations

def make_v1(path: Path) -> tuple[Comparison, Rating]:
    """A database as the v1 station wrote it (v1 DDL only, rows inserted with v1 columns)."""
    c, r = comparison(0, answer="B", comment="v1 row"), rating(1)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    store_mod.MIGRATIONS[0](conn)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    for img in (c.image, r.image):
        conn.execute("INSERT INTO images VALUES (?, ?, ?, 'png', ?)", (store_mod.image_sha256(img), img.shape[0],
                                                                      img.shape[1], store_mod.encode_png(img)))
    cand = [store_mod._candidate_params(x) for x in (c.a, c.b, r.candidate)]
    conn.executemany("INSERT INTO candidates (label, model_id, mode, trace, action, action_normalized, sent, "
                     "depth_codes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", cand)
    conn.execute("INSERT INTO comparisons (created_at, operator, image_sha256, instruction, model_id, unnorm_key, "
                 "kind, a_id, b_id, answer, comment) VALUES (?, ?, ?, ?, ?, ?, ?, 1, 2, ?, ?)",
                 (c.created_at, c.operator, store_mod.image_sha256(c.image), c.instruction, c.model_id,
                  c.unnorm_key, c.kind, c.answer, c.comment))
    conn.execute("INSERT INTO ratings (created_at, operator, image_sha256, instruction, unnorm_key, candidate_id, "
                 "depth_score, trace_score, action_score, note) VALUES (?, ?, ?, ?, ?, 3, ?, ?, ?, ?)",
                 (r.created_at, r.operator, store_mod.image_sha256(r.image), r.instruction, r.unnorm_key,
                  r.depth_score, r.trace_score, r.action_score, r.note))
    conn.execute("COMMIT")
    conn.close()
    return c, r


def columns(conn, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def test_v1_database_is_migrated_in_place(tmp_path):
    db = tmp_path / "v1.db"
    c, r = make_v1(db)
    conn = sqlite3.connect(db)
    assert "episode_index" not in columns(conn, "comparisons")
    conn.close()
    with pytest.raises(SchemaOutdatedError, match="version 1.*needs 2"):
        PreferenceStore(db, readonly=True)                           # read-only cannot migrate: says so
    with PreferenceStore(db) as s:
        assert s.schema_version == 2
        assert list(s.comparisons()) == [c] and list(s.ratings()) == [r]
        newer = comparison(5, recording="rec", episode_index=2, frame_index=9)
        s.add_comparison(newer)
        assert list(s.comparisons())[-1] == newer
        conn = s._conn
        for table in ("comparisons", "ratings"):
            assert {"recording", "episode_index", "frame_index"} <= columns(conn, table)
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"comparisons_episode", "ratings_episode", "comparisons_kind"} <= indexes
    assert store_mod.V2_STATEMENTS and len(store_mod.MIGRATIONS) == SCHEMA_VERSION


def test_fresh_and_migrated_schemas_are_identical(tmp_path):
    make_v1(tmp_path / "old.db")
    PreferenceStore(tmp_path / "old.db").close()
    PreferenceStore(tmp_path / "new.db").close()

    def schema(p):
        conn = sqlite3.connect(p)
        try:
            return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))
        finally:
            conn.close()
    assert schema(tmp_path / "old.db") == schema(tmp_path / "new.db")


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    db = tmp_path / "v1.db"
    c, _ = make_v1(db)

    def broken(conn):
        conn.execute("ALTER TABLE comparisons ADD COLUMN half_done INTEGER")
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store_mod, "MIGRATIONS", (store_mod.MIGRATIONS[0], broken))
    with pytest.raises(StoreFullError, match="full"):
        PreferenceStore(db)
    monkeypatch.undo()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "half_done" not in columns(conn, "comparisons")
    conn.close()
    with PreferenceStore(db) as s:                                    # and the real migration still works
        assert list(s.comparisons()) == [c]


def test_newer_schema_is_refused_untouched(tmp_path):
    db = tmp_path / "f.db"
    filled(db, 2)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.close()
    before = digest(db)
    for readonly in (False, True):
        with pytest.raises(SchemaTooNewError) as err:
            PreferenceStore(db, readonly=readonly)
        msg = str(err.value)
        assert f"version {SCHEMA_VERSION + 7}" in msg and f"up to {SCHEMA_VERSION}" in msg and "update" in msg
        assert err.value.path == str(db)
    assert digest(db) == before
    assert not Path(str(db) + "-wal").exists()


# ------------------------------------------------------------------------------------------ bad files

@pytest.mark.parametrize("content", [b"", b"hello, this is a text file\n" * 10, b"SQLite format 3\x00short",
                                     bytes(range(256)) * 8])
def test_non_sqlite_file_is_refused_untouched(tmp_path, content):
    db = tmp_path / "f.db"
    db.write_bytes(content)
    if not content:                                                   # an empty file is a new database
        PreferenceStore(db).close()
        assert raw_count(db) == 0
        return
    with pytest.raises(StoreCorruptError, match="not a SQLite database.*not modified"):
        PreferenceStore(db)
    with pytest.raises(StoreCorruptError):
        PreferenceStore(db, readonly=True)
    assert db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.db"]


@pytest.mark.parametrize("where", ["schema page", "data pages"])
def test_damaged_database_is_refused_untouched(tmp_path, where):
    db = tmp_path / "f.db"
    filled(db, 30)
    data = bytearray(db.read_bytes())
    offset = 200 if where == "schema page" else len(data) // 2
    data[offset:offset + 1500] = np.random.default_rng(0).integers(0, 256, 1500, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))
    before = digest(db)
    with pytest.raises(StoreCorruptError, match="damaged"):
        PreferenceStore(db)
    assert digest(db) == before


def test_damage_found_while_reading_is_a_store_error(tmp_path, monkeypatch):
    """Past the open-time check (large files skip it), damage shows up as StoreCorruptError, not sqlite3's."""
    db = tmp_path / "f.db"
    filled(db, 30)
    data = bytearray(db.read_bytes())
    data[len(data) // 2:len(data) // 2 + 1500] = b"\xff" * 1500
    db.write_bytes(bytes(data))
    monkeypatch.setattr(store_mod, "QUICK_CHECK_MAX_BYTES", 0)
    with PreferenceStore(db) as s:
        with pytest.raises(StoreCorruptError, match="damaged"):
            list(s.comparisons())


def test_foreign_sqlite_database_is_refused_untouched(tmp_path):
    db = tmp_path / "other.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.commit()
    conn.close()
    before = digest(db)
    with pytest.raises(NotAFeedbackStoreError, match="another application.*moz_places"):
        PreferenceStore(db)
    assert digest(db) == before
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    before = digest(db)
    for readonly in (False, True):
        with pytest.raises(NotAFeedbackStoreError, match="application_id 0x4d2"):
            PreferenceStore(db, readonly=readonly)
    assert digest(db) == before
    assert not Path(str(db) + "-wal").exists()


def test_missing_database_for_reading(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no feedback database"):
        PreferenceStore(tmp_path / "nope.db", readonly=True)
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(StoreError, match="folder"):
        PreferenceStore(tmp_path)


# ------------------------------------------------------------------------------------------ read-only, full, busy

def test_readonly_store_reads_and_refuses_writes(tmp_path):
    db = tmp_path / "f.db"
    cs = filled(db, 3)
    before = digest(db)
    with PreferenceStore(db, readonly=True) as s:
        assert list(s.comparisons()) == cs
        with pytest.raises(StoreReadOnlyError, match="read-only.*Nothing already stored was lost"):
            s.add_comparison(comparison(9))
        with pytest.raises(StoreReadOnlyError):
            s.delete_comparison(1)
    assert digest(db) == before and raw_count(db) == 3


def _mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path):
    """A factory for small tmpfs mounts (root only; skipped elsewhere); unmounted at the end."""
    mounts = []

    def make(size: str = "1m") -> Path:
        mnt = tmp_path / f"mnt{len(mounts)}"
        _mount_tmpfs(mnt, size)
        mounts.append(mnt)
        return mnt

    yield make
    for mnt in mounts:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_disk(tmp_path, tmpfs):
    """A real read-only medium: the writable open says so; the read-only open still reads every row."""
    if os.geteuid() == 0:
        mnt = tmpfs("4m")
        db = mnt / "f.db"
        cs = filled(db, 3)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    else:                                                             # not root: permissions are enough
        folder = tmp_path / "ro"
        folder.mkdir()
        db = folder / "f.db"
        cs = filled(db, 3)
        db.chmod(0o444)
        folder.chmod(0o555)
    before = digest(db)
    with pytest.raises(StoreReadOnlyError, match="read-only.*choose another feedback database path"):
        PreferenceStore(db)
    with pytest.raises(StoreReadOnlyError):
        PreferenceStore(db.parent / "new.db")
    with PreferenceStore(db, readonly=True) as s:
        assert list(s.comparisons()) == cs
    assert digest(db) == before
    if os.geteuid() != 0:
        db.parent.chmod(0o755)


def test_full_database_via_max_page_count(tmp_path):
    """SQLITE_FULL, as a full disk gives it, simulated with PRAGMA max_page_count."""
    db = tmp_path / "f.db"
    cs = filled(db, 3)
    with PreferenceStore(db) as s:
        pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
        s._conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreFullError, match="full.*Nothing already stored was lost.*not saved"):
            s.add_comparison(comparison(9, img=image(9, 120, 160)))
        assert list(s.comparisons()) == cs and s.check() == "ok"
        assert s._conn.execute("SELECT count(*) FROM candidates").fetchone()[0] == 6
        s._conn.execute(f"PRAGMA max_page_count = {pages * 100}")
        s.add_comparison(comparison(10))                                 # space again: writing goes on
    assert raw_count(db) == 4


def test_full_disk(tmpfs):
    """A real full disk (a 1 MiB tmpfs): the answer that does not fit is refused, every earlier one is kept."""
    db = tmpfs("1m") / "f.db"
    saved = []
    with PreferenceStore(db) as s:
        with pytest.raises(StoreFullError, match="disk holding .* is full"):
            for i in range(100):
                c = comparison(i, img=image(i, 120, 160))               # ~58 KB of noise each
                s.add_comparison(c)
                saved.append(c)
        assert 3 < len(saved) < 100
        assert list(s.comparisons()) == saved
    with PreferenceStore(db) as s:
        assert s.check() == "ok" and s.counts()["comparisons"] == len(saved)


def test_locked_database_is_busy_not_lost(tmp_path):
    db = tmp_path / "f.db"
    filled(db, 2)
    s = PreferenceStore(db, busy_timeout_s=0.1)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError, match="locked by another process"):
            s.add_comparison(comparison(5))
    finally:
        other.execute("ROLLBACK")
        other.close()
    s.add_comparison(comparison(6))
    assert s.counts()["comparisons"] == 3
    s.close()


# ------------------------------------------------------------------------------------------ SIGKILL

def test_sigkill_mid_stream_loses_at_most_the_answer_being_written(tmp_path):
    """A child writes answers as fast as it can; it is killed with SIGKILL at random moments (the first
    two times around start-up: before, while or just after it creates the schema). After each kill the file passes integrity_check,
    and holds every answer the child reported committed, plus at most the one in flight."""
    db = tmp_path / "kill.db"
    rng = random.Random(20261124)
    base = 0
    kills_mid_stream = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "tests.app.feedback.kill_writer", str(db), str(round_)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 20
        if round_ < 2:
            time.sleep(rng.uniform(0.02, 0.15))                       # start-up takes ~0.12 s: kill in it or just after
        else:
            while sum(ln.strip().isdigit() for ln in lines) < 3 and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
        assert proc.poll() is None, proc.stderr.read()
        proc.kill()                                                   # SIGKILL
        proc.wait()
        reader.join(5)
        assert proc.returncode == -9
        reported = [int(ln) for ln in lines if ln.strip().isdigit()]
        last = reported[-1] if reported else 0
        kills_mid_stream += bool(reported)

        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            count = conn.execute("SELECT count(*) FROM comparisons").fetchone()[0] if "comparisons" in tables else 0
            if count:                                                 # no orphans: whole answers only
                assert conn.execute("SELECT count(*) FROM candidates").fetchone()[0] == 2 * count
                assert conn.execute("SELECT count(*) FROM comparisons c LEFT JOIN images i "
                                    "ON i.sha256 = c.image_sha256 WHERE i.sha256 IS NULL").fetchone()[0] == 0
        finally:
            conn.close()
        print(f"round {round_}: killed after {last} reported commits, {count - base} stored")
        assert base + last <= count <= base + last + 1, (round_, base, last, count)
        base = count
    assert kills_mid_stream >= 4
    with PreferenceStore(db) as s:
        assert len(list(s.comparisons())) == base and s.check() == "ok"
