"""The preference store: comparisons and ratings in one SQLite file.

- **Durable and transactional**: WAL journal, ``synchronous=FULL`` (each answer is fsynced when it is
  committed: an answer is a human's time, a few per minute, and a power cut in WAL+NORMAL may drop the
  last ones), one ``BEGIN IMMEDIATE … COMMIT`` per answer. A process killed at any moment loses at most
  the answer being written; the file is never left half-written (SQLite's own guarantee, tested by
  killing a writer with SIGKILL).
- **Versioned**: ``PRAGMA user_version`` holds the schema version, ``PRAGMA application_id`` marks the
  file as ours. Opening runs the missing migrations in order, in one transaction. A file from a newer
  station, a file that is not SQLite, a damaged one or another application's database is refused before
  anything is written to it.
- **Images stored once**: keyed by SHA-256 over ``rgb8:{H}x{W}:`` + the raw pixels, stored as lossless PNG
  (OpenCV), so the same frame judged many times costs one copy.
- **Clear errors**: every failure is a ``StoreError`` subclass whose message says what happened to the
  data and what the operator can do (the UI shows it as is).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from .records import ANSWERS, KINDS, MODES, Candidate, Comparison, Outcome, Rating, check_image

SCHEMA_VERSION = 2
APPLICATION_ID = 0x4D414654            # "MAFT": MolmoAct feedback; in the header so a foreign file is refused
SQLITE_MAGIC = b"SQLite format 3\x00"
IMAGE_FORMAT = "png"
PNG_COMPRESSION = 1                     # 0..9, all lossless; 1: ~18 ms per 640x480 frame (3: ~30 ms, 2 % smaller)
PAGE_ROWS = 64                          # rows fetched per query while iterating (no lock held between pages)
QUICK_CHECK_MAX_BYTES = 256 << 20       # opening for writing runs PRAGMA quick_check below this size (~0.1 s)


# ------------------------------------------------------------------------------------------- errors

class StoreError(Exception):
    """The feedback database cannot be used as asked; the message says why and what to do."""

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class SchemaTooNewError(StoreError):
    """The file was written by a newer station (a higher schema version)."""


class SchemaOutdatedError(StoreError):
    """Opened read-only, but the file needs a migration first (open it once for writing)."""


class StoreCorruptError(StoreError):
    """The file is not a SQLite database, or is damaged."""


class NotAFeedbackStoreError(StoreError):
    """A valid SQLite database, but another application's."""


class StoreReadOnlyError(StoreError):
    """The file, its folder or the disk is read-only."""


class StoreFullError(StoreError):
    """The disk (or the database's size limit) is full."""


class StoreBusyError(StoreError):
    """Another process holds the write lock for longer than the busy timeout."""


class StoreNotFoundError(StoreError):
    """Opened for reading, but there is no database at the path."""


_NOTHING_LOST = "Nothing already stored was lost."


def _translate(exc: BaseException, path: Path, doing: str) -> StoreError:
    """An sqlite3/OS error → the StoreError an operator can act on."""
    if isinstance(exc, StoreError):
        return exc
    msg = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    os_errno = getattr(exc, "errno", None)
    low = msg.lower()
    unsaved = " This answer was not saved." if doing.startswith("save") else ""
    if primary == 13 or os_errno == errno.ENOSPC or "disk is full" in low:
        return StoreFullError(
            f"Cannot {doing}: the disk holding {path} is full ({msg}). {_NOTHING_LOST}{unsaved} Free some "
            "space (or choose another feedback database path) and try again.", path)
    if primary == 8 or os_errno in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in low \
            or "read-only" in low:
        return StoreReadOnlyError(
            f"Cannot {doing}: {path} is read-only (the file, its folder or the disk; {msg}). {_NOTHING_LOST} "
            "Make it writable, or choose another feedback database path.", path)
    if primary == 26 or "not a database" in low:
        return StoreCorruptError(
            f"{path} is not a SQLite database ({msg}); it was not modified. Choose another feedback database "
            "path (a new file is created there).", path)
    if primary == 11 or "malformed" in low:
        return StoreCorruptError(
            f"{path} is damaged ({msg}) while trying to {doing}. Stop writing to it and keep a copy; "
            f"`sqlite3 {path} .recover` may rescue its rows. Choose another feedback database path to go on.",
            path)
    if primary in (5, 6) or "locked" in low:
        return StoreBusyError(
            f"Cannot {doing}: {path} is locked by another process (another station?) ({msg}).{unsaved} "
            "Close the other program or wait, then try again.", path)
    if primary == 14:
        return StoreReadOnlyError(
            f"Cannot open {path} ({msg}): its folder is missing or not writable. Choose another feedback "
            "database path.", path)
    if primary == 10:
        return StoreError(
            f"Cannot {doing}: disk I/O error on {path} ({msg}). Check the disk (removed, network share "
            "dropped?); the database is left as it was before this answer.", path)
    return StoreError(f"Cannot {doing} ({path}): {msg}", path)


# ------------------------------------------------------------------------------------------- schema

V1_STATEMENTS: tuple[str, ...] = (
    """CREATE TABLE images (
        sha256 TEXT PRIMARY KEY,
        height INTEGER NOT NULL CHECK (height > 0),
        width INTEGER NOT NULL CHECK (width > 0),
        format TEXT NOT NULL CHECK (format IN ('png')),
        data BLOB NOT NULL
    )""",
    f"""CREATE TABLE candidates (
        id INTEGER PRIMARY KEY,
        label TEXT NOT NULL CHECK (length(label) > 0),
        model_id TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ({", ".join(repr(m) for m in MODES)})),
        trace TEXT NOT NULL CHECK (json_valid(trace)),
        action TEXT NOT NULL CHECK (json_valid(action)),
        action_normalized TEXT CHECK (action_normalized IS NULL OR json_valid(action_normalized)),
        sent TEXT CHECK (sent IS NULL OR json_valid(sent)),
        depth_codes TEXT CHECK (depth_codes IS NULL OR json_valid(depth_codes))
    )""",
    f"""CREATE TABLE comparisons (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        operator TEXT NOT NULL,
        image_sha256 TEXT NOT NULL REFERENCES images(sha256),
        instruction TEXT NOT NULL,
        model_id TEXT NOT NULL,
        unnorm_key TEXT,
        kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in KINDS)})),
        a_id INTEGER NOT NULL UNIQUE REFERENCES candidates(id),
        b_id INTEGER NOT NULL UNIQUE REFERENCES candidates(id),
        answer TEXT NOT NULL CHECK (answer IN ({", ".join(repr(a) for a in ANSWERS)})),
        comment TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE ratings (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        operator TEXT NOT NULL,
        image_sha256 TEXT NOT NULL REFERENCES images(sha256),
        instruction TEXT NOT NULL,
        unnorm_key TEXT,
        candidate_id INTEGER NOT NULL UNIQUE REFERENCES candidates(id),
        depth_score INTEGER CHECK (depth_score BETWEEN 1 AND 5),
        trace_score INTEGER CHECK (trace_score BETWEEN 1 AND 5),
        action_score INTEGER CHECK (action_score BETWEEN 1 AND 5),
        note TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX comparisons_image ON comparisons(image_sha256)",
    "CREATE INDEX ratings_image ON ratings(image_sha256)",
)

# v2: link an answer to the recorded episode it was given on (``--record``: LeRobot v3 layout), and
# index what the leaderboard and the episode view query by.
V2_STATEMENTS: tuple[str, ...] = tuple(
    stmt.format(table=table) for table in ("comparisons", "ratings") for stmt in (
        "ALTER TABLE {table} ADD COLUMN recording TEXT",
        "ALTER TABLE {table} ADD COLUMN episode_index INTEGER CHECK (episode_index >= 0)",
        "ALTER TABLE {table} ADD COLUMN frame_index INTEGER CHECK (frame_index >= 0)",
        "CREATE INDEX {table}_episode ON {table}(recording, episode_index, frame_index)",
    )) + ("CREATE INDEX comparisons_kind ON comparisons(kind, created_at)",)


def _run(statements: Sequence[str]) -> Callable[[sqlite3.Connection], None]:
    def migrate(conn: sqlite3.Connection) -> None:
        for stmt in statements:              # not executescript: it would COMMIT the open transaction
            conn.execute(stmt)
    return migrate


# MIGRATIONS[i] takes a database from version i to version i + 1. Append, never edit a shipped one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_run(V1_STATEMENTS), _run(V2_STATEMENTS))
assert len(MIGRATIONS) == SCHEMA_VERSION

_OUR_TABLES = {"images", "candidates", "comparisons", "ratings"}


# ------------------------------------------------------------------------------------------- images

def image_sha256(image: np.ndarray) -> str:
    """Content hash of an RGB uint8 image: shape and raw pixels (not the PNG bytes, which vary by encoder)."""
    image = np.ascontiguousarray(check_image(image))
    h = hashlib.sha256(f"rgb8:{image.shape[0]}x{image.shape[1]}:".encode())
    h.update(image.data)
    return h.hexdigest()


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION,
                                                                              PNG_COMPRESSION])
    if not ok:
        raise StoreError(f"could not encode a {image.shape[1]}x{image.shape[0]} image as PNG")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# -------------------------------------------------------------------------------------------- store

def _read_header(path: Path) -> tuple[bytes, int, int] | None:
    """The first 100 bytes, user_version and application_id of an existing non-empty file (plain reads)."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _translate(exc, path, "read the feedback database") from exc
    if not head:
        return None
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        raise StoreCorruptError(
            f"{path} is not a SQLite database (it starts with {head[:16]!r}); it was not modified. Choose "
            "another feedback database path (a new file is created there).", path)
    user_version, application_id = struct.unpack(">i4xi", head[60:72])
    return head, user_version, application_id


def _too_new(path: Path, version: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"{path} has feedback schema version {version}, written by a newer station; this station reads "
        f"versions up to {SCHEMA_VERSION}. It was not modified: update the station (git pull, then "
        "reinstall) or choose another feedback database path.", path)


def _foreign(path: Path, detail: str) -> NotAFeedbackStoreError:
    return NotAFeedbackStoreError(
        f"{path} is a SQLite database of another application ({detail}); it was not modified. Choose "
        "another feedback database path.", path)


_CANDIDATE_COLS = ("label", "model_id", "mode", "trace", "action", "action_normalized", "sent", "depth_codes")


def _candidate_params(c: Candidate) -> tuple:
    d = c.to_dict()
    return tuple(json.dumps(d[k]) if k in ("trace", "action", "action_normalized", "sent", "depth_codes")
                 and d[k] is not None else d[k] for k in _CANDIDATE_COLS)


def _candidate_from(row: sqlite3.Row, prefix: str) -> Candidate:
    def load(name: str) -> Any:
        v = row[prefix + name]
        return None if v is None else json.loads(v)
    return Candidate(label=row[prefix + "label"], model_id=row[prefix + "model_id"], mode=row[prefix + "mode"],
                     trace=load("trace"), action=load("action"), action_normalized=load("action_normalized"),
                     sent=load("sent"), depth_codes=load("depth_codes"))


def _candidate_select(alias: str, prefix: str) -> str:
    return ", ".join(f"{alias}.{c} AS {prefix}{c}" for c in _CANDIDATE_COLS)


_COMPARISON_SQL = f"""
    SELECT c.id, c.created_at, c.operator, c.image_sha256, c.instruction, c.model_id, c.unnorm_key, c.kind,
           c.answer, c.comment, c.recording, c.episode_index, c.frame_index,
           i.data AS image_png, i.height AS image_height, i.width AS image_width,
           {_candidate_select("ca", "a_")}, {_candidate_select("cb", "b_")}
    FROM comparisons c
    JOIN images i ON i.sha256 = c.image_sha256
    JOIN candidates ca ON ca.id = c.a_id
    JOIN candidates cb ON cb.id = c.b_id
"""

_RATING_SQL = f"""
    SELECT r.id, r.created_at, r.operator, r.image_sha256, r.instruction, r.unnorm_key,
           r.depth_score, r.trace_score, r.action_score, r.note, r.recording, r.episode_index, r.frame_index,
           i.data AS image_png, i.height AS image_height, i.width AS image_width,
           {_candidate_select("cc", "c_")}
    FROM ratings r
    JOIN images i ON i.sha256 = r.image_sha256
    JOIN candidates cc ON cc.id = r.candidate_id
"""

_COMMON_KEYS = ("id", "created_at", "operator", "image_sha256", "instruction", "unnorm_key", "recording",
                "episode_index", "frame_index", "image_png", "image_height", "image_width")


class PreferenceStore:
    """Comparisons and ratings in a SQLite file; a context manager; safe to share between threads.

    ``PreferenceStore(path)`` creates the file (and its folder) if needed and migrates an older schema in
    place. ``readonly=True`` never writes (exports, reports): it needs an existing file at the current
    schema version. Every failure is a ``StoreError`` (see the subclasses).
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; the feedback database path must name a file.", self.path)
        header = _read_header(self.path)
        if header is not None:                   # checked before SQLite opens (and could write) anything
            _, version, app_id = header
            if app_id not in (0, APPLICATION_ID):
                raise _foreign(self.path, f"application_id {app_id:#x}")
            if version > SCHEMA_VERSION and app_id == APPLICATION_ID:
                raise _too_new(self.path, version)
        if readonly:
            if header is None:
                raise StoreNotFoundError(f"There is no feedback database at {self.path} (or it is empty).",
                                         self.path)
        else:
            self._prepare_folder()
        try:
            try:
                self._conn = self._connect(busy_timeout_s)
                self._open_schema()
            except sqlite3.OperationalError as exc:
                # A WAL database on a read-only medium: without a -wal file everything is in the main
                # file, and nothing can write to it, so SQLite may read it as immutable (no -shm needed).
                if not (readonly and getattr(exc, "sqlite_errorcode", 0) & 0xFF == 14
                        and not Path(str(self.path) + "-wal").exists()):
                    raise
                self.close()
                self._conn = self._connect(busy_timeout_s, immutable=True)
                self._open_schema()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise _translate(exc, self.path, "open the feedback database") from exc
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------------------
    def _prepare_folder(self) -> None:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _translate(exc, self.path, f"create the folder {parent}") from exc
        if not os.access(parent, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            raise StoreReadOnlyError(
                f"Cannot write to {self.path}: the file or its folder is read-only. {_NOTHING_LOST} Make it "
                "writable, or choose another feedback database path.", self.path)

    def _connect(self, busy_timeout_s: float, immutable: bool = False) -> sqlite3.Connection:
        if self.readonly:
            uri = ("file:" + self.path.resolve().as_posix().replace("%", "%25").replace("?", "%3f")
                   .replace("#", "%23") + "?mode=ro" + ("&immutable=1" if immutable else ""))
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    def _open_schema(self) -> None:
        conn = self._conn
        assert conn is not None
        # Reads only, until we know the file is ours and not newer than us.
        version, app_id, tables = self._inspect()
        if version > SCHEMA_VERSION:
            raise _too_new(self.path, version)
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables - {"sqlite_sequence"}):
            raise _foreign(self.path, f"tables {', '.join(sorted(tables))}" if app_id == 0
                           else f"application_id {app_id:#x}")
        if version > 0 and not _OUR_TABLES <= tables:
            raise StoreCorruptError(
                f"{self.path} says schema version {version} but lacks the tables "
                f"{', '.join(sorted(_OUR_TABLES - tables))}; it was not modified. Keep a copy and choose "
                "another feedback database path.", self.path)
        if not self.readonly and version > 0 and self.path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
            problems = [" ".join(str(r[0]).split()) for r in conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise StoreCorruptError(
                    f"{self.path} is damaged ({'; '.join(problems)}); it was not modified. Keep a copy; "
                    f"`sqlite3 {self.path} .recover` may rescue its rows. Choose another feedback database "
                    "path to go on.", self.path)
        conn.execute("PRAGMA foreign_keys = ON")
        if self.readonly:
            if version < SCHEMA_VERSION:
                raise SchemaOutdatedError(
                    f"{self.path} has feedback schema version {version}; this station needs {SCHEMA_VERSION}. "
                    "Opened read-only it cannot be upgraded: open it once for writing (the station does) and "
                    "try again.", self.path)
            return
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode (journal_mode is {mode}); a network "
                             "share cannot hold the feedback database: choose a local path.", self.path)
        conn.execute("PRAGMA synchronous = FULL")
        if version < SCHEMA_VERSION:
            self._migrate()
        else:                                    # prove now that answers can be written, not at the first one
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

    def _inspect(self) -> tuple[int, int, set[str]]:
        conn = self._conn
        assert conn is not None
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return version, app_id, tables

    def _migrate(self) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            version, _, _ = self._inspect()      # another process may have migrated meanwhile
            if version > SCHEMA_VERSION:
                raise _too_new(self.path, version)
            for step in MIGRATIONS[version:]:
                step(conn)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- lifecycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def __enter__(self) -> "PreferenceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreferenceStore({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    @property
    def schema_version(self) -> int:
        with self._reading("read the schema version") as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    # -- plumbing --------------------------------------------------------------------------------------
    @contextmanager
    def _reading(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"The feedback database {self.path} is closed.", self.path)
            try:
                yield self._conn
            except (sqlite3.Error, OSError) as exc:
                raise _translate(exc, self.path, doing) from exc

    @contextmanager
    def _writing(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it is committed, or none of it (rolled back, then re-raised)."""
        if self.readonly:
            raise StoreReadOnlyError(f"Cannot {doing}: {self.path} was opened read-only. {_NOTHING_LOST}",
                                     self.path)
        with self._reading(doing) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    @staticmethod
    def _put_image(conn: sqlite3.Connection, sha: str, image: np.ndarray, png: bytes) -> None:
        conn.execute("INSERT OR IGNORE INTO images (sha256, height, width, format, data) VALUES (?, ?, ?, ?, ?)",
                     (sha, image.shape[0], image.shape[1], IMAGE_FORMAT, png))

    @staticmethod
    def _put_candidate(conn: sqlite3.Connection, c: Candidate) -> int:
        cur = conn.execute(f"INSERT INTO candidates ({', '.join(_CANDIDATE_COLS)}) VALUES "
                           f"({', '.join('?' * len(_CANDIDATE_COLS))})", _candidate_params(c))
        return int(cur.lastrowid)

    def _encoded(self, image: np.ndarray) -> tuple[str, bytes | None]:
        """The hash, and the PNG unless the image is already stored (encoding is the slow part)."""
        sha = image_sha256(image)
        with self._reading("look up an image") as conn:
            known = conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (sha,)).fetchone() is not None
        return sha, None if known else encode_png(image)

    # -- writing ---------------------------------------------------------------------------------------
    def _ensure_image(self, conn, sha: str, image: np.ndarray, png: bytes | None) -> None:
        """Inside the write transaction: store the frame unless it is there (``png`` is None when it was
        before the transaction; encode now if it was deleted meanwhile)."""
        if png is None and conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (sha,)).fetchone() is None:
            png = encode_png(image)
        if png is not None:
            self._put_image(conn, sha, image, png)

    def add_comparison(self, c: Comparison) -> int:
        """Store one answer (its image once, both candidates) in one transaction; returns its id."""
        if not isinstance(c, Comparison):
            raise TypeError("add_comparison takes a Comparison")
        sha, png = self._encoded(c.image)
        with self._writing("save the comparison") as conn:
            self._ensure_image(conn, sha, c.image, png)
            a_id, b_id = self._put_candidate(conn, c.a), self._put_candidate(conn, c.b)
            cur = conn.execute(
                "INSERT INTO comparisons (created_at, operator, image_sha256, instruction, model_id, unnorm_key, "
                "kind, a_id, b_id, answer, comment, recording, episode_index, frame_index) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (c.created_at, c.operator, sha, c.instruction, c.model_id, c.unnorm_key, c.kind, a_id, b_id,
                 c.answer, c.comment, c.recording, c.episode_index, c.frame_index))
            row_id = int(cur.lastrowid)
        c.id = row_id
        return row_id

    def add_rating(self, r: Rating) -> int:
        """Store one rating (its image once, the rated step) in one transaction; returns its id."""
        if not isinstance(r, Rating):
            raise TypeError("add_rating takes a Rating")
        sha, png = self._encoded(r.image)
        with self._writing("save the rating") as conn:
            self._ensure_image(conn, sha, r.image, png)
            cand_id = self._put_candidate(conn, r.candidate)
            cur = conn.execute(
                "INSERT INTO ratings (created_at, operator, image_sha256, instruction, unnorm_key, candidate_id, "
                "depth_score, trace_score, action_score, note, recording, episode_index, frame_index) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.created_at, r.operator, sha, r.instruction, r.unnorm_key, cand_id, r.depth_score,
                 r.trace_score, r.action_score, r.note, r.recording, r.episode_index, r.frame_index))
            row_id = int(cur.lastrowid)
        r.id = row_id
        return row_id

    def _delete(self, table: str, row_id: int, candidate_cols: Sequence[str]) -> bool:
        with self._writing(f"delete from {table}") as conn:
            row = conn.execute(f"SELECT image_sha256, {', '.join(candidate_cols)} FROM {table} WHERE id = ?",
                               (row_id,)).fetchone()
            if row is None:
                return False
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
            conn.executemany("DELETE FROM candidates WHERE id = ?", [(row[c],) for c in candidate_cols])
            conn.execute("DELETE FROM images WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM comparisons WHERE "
                         "image_sha256 = ?) AND NOT EXISTS (SELECT 1 FROM ratings WHERE image_sha256 = ?)",
                         (row[0],) * 3)
        return True

    def delete_comparison(self, comparison_id: int) -> bool:
        """Undo an answer (its candidates, and its image if nothing else uses it). False if there was none."""
        return self._delete("comparisons", int(comparison_id), ("a_id", "b_id"))

    def delete_rating(self, rating_id: int) -> bool:
        return self._delete("ratings", int(rating_id), ("candidate_id",))

    # -- reading ---------------------------------------------------------------------------------------
    def _paged(self, sql: str, alias: str, where: list[str], params: list[Any], doing: str
               ) -> Iterator[sqlite3.Row]:
        """Keyset pages of PAGE_ROWS, the lock held per page only (writers may interleave)."""
        last = 0
        while True:
            clause = " AND ".join(where + [f"{alias}.id > ?"])
            with self._reading(doing) as conn:
                rows = conn.execute(f"{sql} WHERE {clause} ORDER BY {alias}.id LIMIT {PAGE_ROWS}",
                                    params + [last]).fetchall()
            yield from rows
            if len(rows) < PAGE_ROWS:
                return
            last = rows[-1]["id"]

    def _common(self, row: sqlite3.Row) -> dict[str, Any]:
        return {k: row[k] for k in _COMMON_KEYS}

    def comparison_rows(self, kind: str | None = None, answers: Sequence[str] | None = None
                        ) -> Iterator[dict[str, Any]]:
        """Comparisons as flat dicts, oldest first, the image as PNG bytes (``image_png``), candidates
        ``a``/``b`` as ``Candidate``: what an export needs without decoding images."""
        where, params = self._filters("c", kind, answers)
        for row in self._paged(_COMPARISON_SQL, "c", where, params, "read comparisons"):
            d = self._common(row)
            d.update(model_id=row["model_id"], kind=row["kind"], answer=row["answer"], comment=row["comment"])
            try:
                d.update(a=_candidate_from(row, "a_"), b=_candidate_from(row, "b_"))
            except (ValueError, json.JSONDecodeError) as exc:
                raise self._damaged_row("comparison", row["id"], exc) from exc
            yield d

    def rating_rows(self) -> Iterator[dict[str, Any]]:
        """Ratings as flat dicts (as ``comparison_rows``), the rated step as ``candidate``."""
        for row in self._paged(_RATING_SQL, "r", [], [], "read ratings"):
            d = self._common(row)
            d.update(depth_score=row["depth_score"], trace_score=row["trace_score"],
                     action_score=row["action_score"], note=row["note"])
            try:
                d["candidate"] = _candidate_from(row, "c_")
            except (ValueError, json.JSONDecodeError) as exc:
                raise self._damaged_row("rating", row["id"], exc) from exc
            yield d

    def comparisons(self, kind: str | None = None, answers: Sequence[str] | None = None) -> Iterator[Comparison]:
        """The stored comparisons, oldest first, as records (images decoded, ``id`` set)."""
        for d in self.comparison_rows(kind, answers):
            yield Comparison(image=self._decode(d), instruction=d["instruction"], model_id=d["model_id"],
                             unnorm_key=d["unnorm_key"], kind=d["kind"], a=d["a"], b=d["b"], answer=d["answer"],
                             operator=d["operator"], comment=d["comment"], created_at=d["created_at"],
                             recording=d["recording"], episode_index=d["episode_index"],
                             frame_index=d["frame_index"], id=d["id"])

    def ratings(self) -> Iterator[Rating]:
        for d in self.rating_rows():
            yield Rating(image=self._decode(d), instruction=d["instruction"], unnorm_key=d["unnorm_key"],
                         candidate=d["candidate"], operator=d["operator"], depth_score=d["depth_score"],
                         trace_score=d["trace_score"], action_score=d["action_score"], note=d["note"],
                         created_at=d["created_at"], recording=d["recording"], episode_index=d["episode_index"],
                         frame_index=d["frame_index"], id=d["id"])

    def outcomes(self, kind: str | None = None) -> list[Outcome]:
        """Labels and answers only (no images): what the leaderboard needs."""
        where, params = self._filters("c", kind, None)
        sql = ("SELECT ca.label, cb.label, c.answer, c.kind FROM comparisons c JOIN candidates ca ON ca.id = c.a_id "
               "JOIN candidates cb ON cb.id = c.b_id")
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._reading("read comparisons") as conn:
            return [Outcome(*r) for r in conn.execute(sql + " ORDER BY c.id", params)]

    def counts(self) -> dict[str, int]:
        """``comparisons``, ``ratings``, ``images``, and comparisons per answer (``A``, ``B``, ``tie``,
        ``both_bad``)."""
        with self._reading("count the stored answers") as conn:
            out = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                   for t in ("comparisons", "ratings", "images")}
            out.update({a: 0 for a in ANSWERS})
            out.update({a: n for a, n in conn.execute("SELECT answer, count(*) FROM comparisons GROUP BY answer")})
        return out

    def image_png(self, sha256: str) -> bytes:
        with self._reading("read an image") as conn:
            row = conn.execute("SELECT data FROM images WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            raise KeyError(sha256)
        return bytes(row[0])

    def image(self, sha256: str) -> np.ndarray:
        """The stored image (RGB uint8) with that content hash; KeyError if there is none."""
        png = self.image_png(sha256)
        try:
            return decode_png(png)
        except ValueError as exc:
            raise self._damaged_row("image", sha256, exc) from exc

    def check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"``, or SQLite's findings joined by newlines (a file too damaged
        for SQLite to walk raises ``StoreCorruptError`` instead)."""
        with self._reading("check the database") as conn:
            return "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))

    # -- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _filters(alias: str, kind: str | None, answers: Sequence[str] | None) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if kind is not None:
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
            where.append(f"{alias}.kind = ?")
            params.append(kind)
        if answers is not None:
            answers = list(answers)
            bad = [a for a in answers if a not in ANSWERS]
            if bad:
                raise ValueError(f"answer {bad[0]!r} is not one of {', '.join(ANSWERS)}")
            where.append(f"{alias}.answer IN ({', '.join('?' * len(answers))})" if answers else "0")
            params += answers
        return where, params

    def _decode(self, d: dict[str, Any]) -> np.ndarray:
        try:
            img = decode_png(d["image_png"])
        except ValueError as exc:
            raise self._damaged_row("image", d["image_sha256"], exc) from exc
        if img.shape[:2] != (d["image_height"], d["image_width"]):
            raise self._damaged_row("image", d["image_sha256"],
                                    ValueError(f"decoded {img.shape[1]}x{img.shape[0]}, stored as "
                                               f"{d['image_width']}x{d['image_height']}"))
        return img

    def _damaged_row(self, what: str, key: Any, exc: BaseException) -> StoreCorruptError:
        return StoreCorruptError(
            f"{self.path}: stored {what} {key} cannot be read ({exc}). The database is damaged or was edited "
            "by hand; keep a copy and check it with `python -m app.feedback check DB`.", self.path)


__all__ = ["APPLICATION_ID", "MIGRATIONS", "NotAFeedbackStoreError", "PreferenceStore", "SCHEMA_VERSION",
           "SchemaOutdatedError", "SchemaTooNewError", "StoreBusyError", "StoreCorruptError", "StoreError",
           "StoreFullError", "StoreNotFoundError", "StoreReadOnlyError", "V1_STATEMENTS", "V2_STATEMENTS",
           "decode_png", "encode_png", "image_sha256"]
