"""Record a steering session as a LeRobotDataset v3.0: one row per step, videos per camera, depth as its
own stream, and the model's reasoning and the operator's edits as extra features.

    rec = EpisodeRecorder("~/datasets/cell1", fps=2, robot_type="franka", image_size=(480, 640))
    rec.start_episode("pick up the red cube")
    rec.add_step(StepRecord.from_frame(frame, "pick up the red cube", trace=..., action=sent, ...))
    rec.save_episode()          # or rec.discard_episode()
    rec.close()

Per step (lerobot's names where lerobot has one):
- ``observation.images.<cam>`` (video, AV1) and ``observation.images.<cam>_depth`` (video, 12-bit log codes,
  lossless HEVC, ``is_depth_map``), ``camera.<cam>.intrinsics`` (fx, fy, cx, cy), ``camera.<cam>.timestamp``;
- ``observation.state`` (end effector xyz, rpy, gripper; zeros without an arm), ``action`` (what the arm
  was actually sent; zeros when nothing was sent) and ``sent``;
- ``molmoact.action`` / ``molmoact.action_normalized`` (the model's first action), ``molmoact.trace`` (the
  trace the action came from, the operator's when edited) and ``molmoact.model_trace`` (what the model said),
  both (5, 2) int16 padded with -1 plus ``*_len``; ``molmoact.depth_codes`` (100, -1 when absent);
  ``molmoact.mode`` (0 reason, 1 steer_visual, 2 steer_text), ``intervention`` (the operator's trace was
  used), ``safety.clipped`` and ``safety.reasons`` (a string column), ``step.status``, ``step.index``,
  ``step.elapsed`` (wall-clock seconds since the episode's ``station/started_at``); and lerobot's own
  ``timestamp`` (= frame_index / fps), ``frame_index``, ``episode_index``, ``index``, ``task_index`` (the
  instruction, through ``meta/tasks.parquet``).

Per episode, beside lerobot's columns: each camera's distortion model and coefficients, and its exact depth
(``extras/depth/...mkv``: FFV1, lossless 16-bit in the camera's own depth unit, 1 mm by default).

Saving is transactional (``store.py``): a full or read-only disk, or an encoder error, raises
``RecordingError`` and leaves every stored episode and meta file as it was; the episode stays in the
recorder, so ``save_episode()`` can be retried or the episode discarded.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from app.devices.camera import Intrinsics

from . import format as fm
from . import tables, video
from .store import RecordingError, Transaction, describe_os_error, recover, write_bytes_atomic

try:
    import fcntl                                         # POSIX: one recorder per root at a time
except ImportError:                                      # pragma: no cover - Windows: no lock
    fcntl = None

log = logging.getLogger(__name__)

Point = tuple[int, int]


# -------------------------------------------------------------------------------------------- records

@dataclass
class CameraSample:
    """One camera's view of a step."""
    rgb: np.ndarray                                   # HxWx3 uint8
    depth: np.ndarray | None = None                   # HxW float32 metres, aligned to rgb; 0 = invalid
    intrinsics: Intrinsics | Sequence[float] | None = None   # Intrinsics, or (fx, fy, cx, cy)
    timestamp: float = float("nan")                   # the camera's clock (seconds)
    depth_scale: float = 0.001                        # the sensor's depth unit (metres); the exact sidecar's unit

    @classmethod
    def from_frame(cls, frame: Any) -> "CameraSample":
        """From an ``app.devices.camera.Frame``."""
        return cls(rgb=frame.rgb, depth=frame.depth, intrinsics=frame.intrinsics, timestamp=float(frame.timestamp),
                   depth_scale=float(getattr(frame, "depth_scale", 0.001) or 0.001))


@dataclass
class StepRecord:
    """Everything about one step of a session, Qt-free. The first camera's view is ``rgb``/``depth``/
    ``intrinsics``; further cameras go in ``extra_cameras`` under their keys."""
    rgb: np.ndarray
    instruction: str
    depth: np.ndarray | None = None
    intrinsics: Intrinsics | Sequence[float] | None = None
    camera_timestamp: float = float("nan")
    depth_scale: float = 0.001
    timestamp: float = field(default_factory=time.time)        # wall clock of the step
    state: Sequence[float] | None = None                       # ee xyz, rpy, gripper; None: no arm (zeros)
    action: Sequence[float] | None = None                      # what the arm got; None: nothing sent (zeros)
    sent: bool | None = None                                   # default: action is not None
    model_action: Sequence[float] | None = None                # un-normalized (NaN when absent)
    model_action_normalized: Sequence[float] | None = None
    trace: Sequence[Sequence[float]] = ()                      # the trace the action came from (model space)
    model_trace: Sequence[Sequence[float]] | None = None       # what the model said; default: trace
    depth_codes: Sequence[int] = ()
    mode: str = "reason"
    intervention: bool | None = None                           # default: trace != model_trace
    safety_reasons: Sequence[str] = ()
    clipped: bool | None = None                                # default: any safety reason
    status: str | None = None                                  # ActionStep.status
    step_index: int = -1
    extra_cameras: Mapping[str, CameraSample] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame: Any, instruction: str, **kw: Any) -> "StepRecord":
        """From an ``app.devices.camera.Frame`` (rgb, aligned depth, intrinsics, its timestamp and depth unit)."""
        return cls(rgb=frame.rgb, depth=frame.depth, intrinsics=frame.intrinsics,
                   camera_timestamp=float(frame.timestamp),
                   depth_scale=float(getattr(frame, "depth_scale", 0.001) or 0.001), instruction=instruction, **kw)

    @classmethod
    def from_action_step(cls, step: Any, frame: Any, instruction: str, *, model_trace: Sequence[Sequence[float]],
                         depth_codes: Sequence[int] = (), state: Sequence[float] | None = None,
                         **kw: Any) -> "StepRecord":
        """From the session's ``ActionStep`` (after ``go()``, or as it was left) and the frame the model saw.

        ``model_trace``/``depth_codes`` come from the ``Reasoning`` of the ``reason`` call (a steer keeps the
        model's depth codes; ``steer_visual`` has none of its own)."""
        sent = getattr(step, "sent", None)
        return cls.from_frame(
            frame, instruction,
            state=state, action=None if sent is None else list(np.asarray(sent, float)), sent=sent is not None,
            model_action=list(np.asarray(step.action, float)),
            model_action_normalized=list(np.asarray(step.action_normalized, float)),
            trace=list(step.trace), model_trace=list(model_trace), depth_codes=list(depth_codes), mode=step.mode,
            safety_reasons=list(step.safety), status=step.status, step_index=int(step.index), **kw)

    def primary(self) -> CameraSample:
        return CameraSample(self.rgb, self.depth, self.intrinsics, self.camera_timestamp, self.depth_scale)


@dataclass(frozen=True)
class SavedEpisode:
    episode_index: int
    length: int
    tasks: list[str]
    data_path: str
    video_paths: dict[str, str]


# ------------------------------------------------------------------------------------------- helpers

def _intrinsics_tuple(k: Intrinsics | Sequence[float] | None) -> tuple[np.ndarray, str, list]:
    if k is None:
        return np.full(4, np.nan, np.float32), "none", [0.0] * 5
    if isinstance(k, Intrinsics) or hasattr(k, "fx"):
        return (np.array([k.fx, k.fy, k.cx, k.cy], np.float32), str(getattr(k, "model", "none")),
                [float(c) for c in getattr(k, "coeffs", ())])
    v = np.asarray(k, dtype=np.float32).reshape(-1)
    if v.shape != (4,):
        raise RecordingError(f"intrinsics must be an Intrinsics or (fx, fy, cx, cy), got {v.shape}")
    return v, "none", [0.0] * 5


def _trace_array(trace: Sequence[Sequence[float]] | None, what: str) -> tuple[np.ndarray, int]:
    out = np.full((fm.MAX_TRACE_POINTS, 2), -1, np.int16)
    pts = list(trace or ())
    if len(pts) > fm.MAX_TRACE_POINTS:
        raise RecordingError(f"{what} has {len(pts)} points; at most {fm.MAX_TRACE_POINTS}")
    for i, p in enumerate(pts):
        x, y = float(p[0]), float(p[1])
        if not (np.isfinite(x) and np.isfinite(y)):
            raise RecordingError(f"{what} point {i} is not finite")
        out[i] = (int(np.clip(round(x), 0, fm.TRACE_MAX_COORD)), int(np.clip(round(y), 0, fm.TRACE_MAX_COORD)))
    return out, len(pts)


def _vector(v: Sequence[float] | None, n: int, what: str, fill: float) -> np.ndarray:
    if v is None:
        return np.full(n, fill, np.float32)
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (n,):
        raise RecordingError(f"{what} must have {n} values, got {a.shape[0]}")
    return a.astype(np.float32)


def _stage(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` without giving it up (a failed save keeps the episode): hard link, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class _Thinned:
    """Evenly spaced samples of a stream of unknown length, at most ``2 * cap`` kept (for image stats)."""

    def __init__(self, cap: int = fm.STATS_MAX_IMAGES) -> None:
        self.cap = cap
        self.stride = 1
        self.seen = 0
        self.items: list[np.ndarray] = []

    def add(self, make: Callable[[], np.ndarray]) -> None:
        """``make`` builds the sample; it is only called for the frames that are kept."""
        if self.seen % self.stride == 0:
            self.items.append(make())
            if len(self.items) >= 2 * self.cap:
                self.items = self.items[::2]
                self.stride *= 2
        self.seen += 1

    def sample(self) -> list[np.ndarray]:
        return [self.items[i] for i in fm.sample_indices(len(self.items), self.cap)]


class _Episode:
    """The episode being recorded: frame columns in memory, videos streaming into the staging folder."""

    def __init__(self, index: int, task: str, folder: Path) -> None:
        self.index = index
        self.task = task
        self.folder = folder
        self.columns: dict[str, list] = {}
        self.tasks: list[str] = []
        self.encoders: dict[str, video.StreamEncoder] = {}
        self.files: dict[str, Path] = {}            # finished files: video key -> mp4, "exact:<key>" -> mkv
        self.samples: dict[str, _Thinned] = {}
        self.cameras: dict[str, dict[str, Any]] = {}
        self.broken: str | None = None
        self.started_at = time.time()

    @property
    def length(self) -> int:
        return len(self.tasks)


# ------------------------------------------------------------------------------------------- recorder

class EpisodeRecorder:
    """Writes episodes into a LeRobotDataset v3.0 root; a root that already holds one is continued."""

    def __init__(self, root: str | os.PathLike, fps: int, robot_type: str | None = "molmoact_station",
                 camera_keys: Sequence[str] = ("front",), image_size: tuple[int, int] = (480, 640), *,
                 depth: bool = True, exact_depth: bool = True, rgb_crf: int = 30,
                 action_names: Sequence[str] = fm.POSE_NAMES, state_names: Sequence[str] = fm.POSE_NAMES,
                 depth_quantizer: fm.DepthQuantizer | None = None, chunks_size: int = fm.DEFAULT_CHUNK_SIZE,
                 data_files_size_in_mb: float = fm.DEFAULT_DATA_FILE_SIZE_IN_MB,
                 video_files_size_in_mb: float = fm.DEFAULT_VIDEO_FILE_SIZE_IN_MB) -> None:
        if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
            raise ValueError(f"fps must be a positive integer (a LeRobot dataset's rate is one), got {fps!r}")
        keys = list(camera_keys)
        if not keys or len(set(keys)) != len(keys) or any(not k or "/" in k or "." in k for k in keys):
            raise ValueError(f"camera keys must be distinct non-empty names without '/' or '.', got {keys}")
        h, w = int(image_size[0]), int(image_size[1])
        if h <= 0 or w <= 0 or h % 2 or w % 2:
            raise ValueError(f"image size must be positive and even (4:2:0 video), got {h}x{w}")
        self.root = Path(root).expanduser()
        self.fps = int(fps)
        self.camera_keys = keys
        self.image_size = (h, w)
        self.depth = bool(depth)
        self.exact_depth = bool(exact_depth and depth)
        self.quantizer = depth_quantizer or fm.DepthQuantizer()
        self.rgb_encoding = fm.rgb_encoding(rgb_crf)
        self.depth_encoding = fm.depth_encoding()
        self._action_dim = len(action_names)
        self._state_dim = len(state_names)
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._episode: _Episode | None = None
        self._closed = False

        features = fm.build_features(keys, (h, w), depth=self.depth, action_names=action_names,
                                     state_names=state_names, depth_quantizer=self.quantizer)
        existing = self._inspect_root()
        if existing is not None:
            self._check_compatible(existing, features)
        self._open_for_writing()
        try:
            if existing is not None:
                try:
                    self._load(features)
                except (KeyError, TypeError, ValueError) as e:
                    raise RecordingError(f"{self.root}: the metadata is malformed ({e!r}); the dataset was left "
                                         f"as it is") from e
            else:
                self._create(features, robot_type, chunks_size, data_files_size_in_mb, video_files_size_in_mb)
        except BaseException:
            self._release_lock()
            raise

    # ------------------------------------------------------------------------------------- opening
    def _inspect_root(self) -> dict | None:
        """The existing info.json, None for a new dataset; refuses anything else without touching it."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise RecordingError(f"{root} is a file, not a dataset folder")
        info_path = root / fm.INFO_PATH
        if not info_path.exists():
            if root.is_dir() and any(p.name != fm.STAGING_DIR for p in root.iterdir()):
                raise RecordingError(f"{root} is not empty and has no meta/info.json: it is not a LeRobot dataset "
                                     f"(choose an empty or new folder)")
            return None
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecordingError(f"{info_path} is unreadable ({e}); the dataset was left as it is") from e
        if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
            raise RecordingError(f"{info_path} is not a LeRobot info.json; the dataset was left as it is")
        version = info.get("codebase_version")
        if version != fm.CODEBASE_VERSION:
            raise RecordingError(f"{root} is a LeRobot dataset of version {version!r}; this recorder writes "
                                 f"{fm.CODEBASE_VERSION} only (convert it with lerobot first); left as it is")
        return info

    def _check_compatible(self, info: dict, features: dict) -> None:
        try:
            have = fm.comparable(info["features"])
            fps = int(info.get("fps", -1))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise RecordingError(f"{self.root}/meta/info.json is malformed ({e!r}); the dataset was left "
                                 f"as it is") from e
        if fps != self.fps:
            raise RecordingError(f"{self.root} was recorded at {info.get('fps')} fps, not {self.fps}: "
                                 f"record into a new folder")
        want = fm.comparable(features)
        if have != want:
            diff = sorted(set(have.items()) ^ set(want.items()))
            raise RecordingError(f"{self.root} holds different features (cameras, image size, or extras): "
                                 f"{diff[:4]}{' ...' if len(diff) > 4 else ''}; record into a new folder")

    def _open_for_writing(self) -> None:
        staging = self.root / fm.STAGING_DIR
        try:
            staging.mkdir(parents=True, exist_ok=True)
            fd = os.open(staging / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RecordingError(describe_os_error(e, f"cannot write to {self.root}")) from e
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            raise RecordingError(f"another recorder is writing to {self.root}") from e
        self._lock_fd = fd
        try:
            probe = staging / f"probe-{uuid.uuid4().hex[:8]}"
            write_bytes_atomic(probe, b"ok")
            probe.unlink()
            for line in recover(self.root):
                log.warning("%s: %s", self.root, line)
        except OSError as e:
            self._release_lock()
            raise RecordingError(describe_os_error(e, f"cannot write to {self.root}")) from e

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                if fcntl is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _create(self, features: dict, robot_type: str | None, chunks_size: int, data_mb: float,
                video_mb: float) -> None:
        self._info = fm.empty_info(features, self.fps, robot_type, chunks_size=int(chunks_size),
                                   data_files_size_in_mb=data_mb, video_files_size_in_mb=video_mb)
        self._stats: dict | None = None
        self._tasks: list[str] = []
        self._episode_rows: list[dict] = []                 # rows of the newest meta/episodes file
        self._last_row: dict | None = None
        txn = self._transaction()
        try:
            txn.write_json(fm.INFO_PATH, self._info)
            txn.commit()
        except OSError as e:
            txn.abort()
            raise RecordingError(describe_os_error(e, f"cannot create the dataset in {self.root}")) from e

    def _load(self, features: dict) -> None:
        root = self.root
        info = self._inspect_root()                         # again: a roll-forward may have updated it
        if info is None:
            raise RecordingError(f"{root}/meta/info.json disappeared while opening")
        self._check_compatible(info, features)
        self._info = info
        stats_path = root / fm.STATS_PATH
        try:
            self._stats = (fm.stats_from_json(json.loads(stats_path.read_text("utf-8")))
                           if stats_path.exists() else None)
        except (OSError, ValueError) as e:
            raise RecordingError(f"{stats_path} is unreadable ({e}); the dataset was left as it is") from e
        n_eps, n_tasks = int(info.get("total_episodes", 0)), int(info.get("total_tasks", 0))
        self._tasks = tables.read_tasks(root / fm.TASKS_PATH) if n_tasks else []
        if len(self._tasks) != n_tasks:
            raise RecordingError(f"{root}: info.json says {n_tasks} tasks, tasks.parquet has {len(self._tasks)}")
        self._episode_rows, self._last_row = [], None
        if n_eps:
            files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
            if not files:
                raise RecordingError(f"{root}: info.json says {n_eps} episodes but meta/episodes/ is empty")
            rows = tables.read_table(files[-1], "the episode table").to_pylist()
            if not rows:
                raise RecordingError(f"{files[-1]} has no rows")
            last = rows[-1]
            if (int(last["episode_index"]) != n_eps - 1
                    or int(last["dataset_to_index"]) != int(info["total_frames"])):
                raise RecordingError(f"{root}: the last episode row ({last['episode_index']}, ending at frame "
                                     f"{last['dataset_to_index']}) disagrees with info.json ({n_eps} episodes, "
                                     f"{info['total_frames']} frames); the dataset was left as it is")
            self._episode_rows, self._last_row = rows, last
            data = info["data_path"].format(chunk_index=last["data/chunk_index"],
                                            file_index=last["data/file_index"])
            tables.check_readable(root / data, "the data file")
            for key in fm.video_keys(info["features"]):
                p = root / info["video_path"].format(video_key=key, chunk_index=last[f"videos/{key}/chunk_index"],
                                                     file_index=last[f"videos/{key}/file_index"])
                if not p.exists():
                    raise RecordingError(f"{root}: the video {p} is missing; the dataset was left as it is")

    def _transaction(self) -> Transaction:
        try:
            return Transaction(self.root)
        except OSError as e:
            raise RecordingError(describe_os_error(e, f"cannot write to {self.root}")) from e

    # ------------------------------------------------------------------------------------- state
    @property
    def features(self) -> dict[str, dict]:
        return self._info["features"]

    @property
    def info(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._info))

    @property
    def total_episodes(self) -> int:
        return int(self._info["total_episodes"])

    @property
    def total_frames(self) -> int:
        return int(self._info["total_frames"])

    @property
    def recording(self) -> bool:
        return self._episode is not None

    @property
    def episode_index(self) -> int:
        """The episode being recorded, or the one the next ``start_episode`` will record."""
        return self._episode.index if self._episode is not None else self.total_episodes

    @property
    def num_frames(self) -> int:
        """Frames in the episode being recorded (0 when none)."""
        return self._episode.length if self._episode is not None else 0

    # ------------------------------------------------------------------------------------- episodes
    def start_episode(self, task: str) -> int:
        """Begin a new episode with ``task`` (the instruction) as its default task; returns its index."""
        with self._lock:
            self._check_open()
            if not isinstance(task, str) or not task.strip():
                raise RecordingError("an episode needs a task (the instruction)")
            if self._episode is not None:
                raise RecordingError(f"episode {self._episode.index} is still open: save or discard it first")
            folder = self.root / fm.STAGING_DIR / f"episode-{uuid.uuid4().hex[:12]}"
            try:
                folder.mkdir(parents=True)
            except OSError as e:
                raise RecordingError(describe_os_error(e, f"cannot start an episode in {self.root}")) from e
            self._episode = _Episode(self.total_episodes, task, folder)
            return self._episode.index

    def add_step(self, step: StepRecord) -> int:
        """Append one step to the open episode; returns its frame index."""
        with self._lock:
            self._check_open()
            ep = self._episode
            if ep is None:
                raise RecordingError("no episode is open: call start_episode() first")
            if ep.broken:
                raise RecordingError(f"episode {ep.index} cannot take more steps ({ep.broken}); discard it")
            if ep.files:
                raise RecordingError(f"episode {ep.index} takes no more steps (a save of it failed): save it "
                                     f"again or discard it")
            row = self._row(step)                            # validates everything before anything is written
            try:
                self._encode(ep, step)
            except RecordingError as e:
                ep.broken = str(e)
                raise
            except Exception as e:                           # noqa: BLE001 - PyAV's errors, OSError or not
                ep.broken = describe_os_error(e, "a video frame could not be written")
                raise RecordingError(f"episode {ep.index}: {ep.broken}") from e
            for k, v in row.items():
                ep.columns.setdefault(k, []).append(v)
            instruction = step.instruction if step.instruction and step.instruction.strip() else ep.task
            ep.tasks.append(instruction)
            return ep.length - 1

    def discard_episode(self) -> None:
        """Drop the open episode (lerobot's re-record); nothing stored changes."""
        with self._lock:
            ep, self._episode = self._episode, None
            if ep is not None:
                for enc in ep.encoders.values():
                    enc.abort()
                shutil.rmtree(ep.folder, ignore_errors=True)

    def save_episode(self) -> SavedEpisode:
        """Write the open episode (data rows, videos, episode row, info/stats/tasks) in one transaction."""
        with self._lock:
            self._check_open()
            ep = self._episode
            if ep is None:
                raise RecordingError("no episode is open")
            if ep.broken:
                raise RecordingError(f"episode {ep.index} is incomplete ({ep.broken}); discard it")
            if ep.length == 0:
                raise RecordingError(f"episode {ep.index} has no steps: add steps or discard it")
            try:
                self._finish_encoders(ep)
            except Exception as e:                           # noqa: BLE001
                ep.broken = describe_os_error(e, "its videos could not be finished")
                raise RecordingError(f"episode {ep.index}: {ep.broken}") from e
            txn = self._transaction()
            try:
                saved, new_state = self._stage_episode(ep, txn)
                txn.commit()
            except RecordingError:
                txn.abort()
                raise
            except OSError as e:
                txn.abort()
                raise RecordingError(describe_os_error(e, f"episode {ep.index} was not saved") +
                                     "; the stored episodes are unchanged and this one can be saved again "
                                     "or discarded") from e
            except Exception as e:                           # noqa: BLE001
                txn.abort()
                raise RecordingError(f"episode {ep.index} was not saved ({type(e).__name__}: {e}); the stored "
                                     f"episodes are unchanged") from e
            self._info, self._stats, self._tasks, self._episode_rows, self._last_row = new_state
            self._episode = None
            shutil.rmtree(ep.folder, ignore_errors=True)
            return saved

    def close(self, save: bool = True) -> None:
        """Stop recording (lerobot's Esc): the open episode is saved (``save``; an empty or broken one is
        discarded), then the root is released. Idempotent. If that save fails, the error is raised and
        the recorder stays open, so the caller can retry or ``close(save=False)``."""
        with self._lock:
            if self._closed:
                return
            if self._episode is not None:
                if save and self._episode.length and not self._episode.broken:
                    self.save_episode()
                else:
                    self.discard_episode()
            self._closed = True
            self._release_lock()

    def __enter__(self) -> "EpisodeRecorder":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(save=exc_type is None)

    def __del__(self) -> None:
        # Forgotten without close(): no saving here (that is close's job), only the lock is let go.
        try:
            self._release_lock()
        except Exception:                                    # noqa: BLE001 - interpreter shutdown
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise RecordingError("the recorder is closed")

    # ------------------------------------------------------------------------------------- one step
    def _cameras(self, step: StepRecord) -> dict[str, CameraSample]:
        cams = {self.camera_keys[0]: step.primary()}
        extra = dict(step.extra_cameras or {})
        unknown = set(extra) - set(self.camera_keys[1:])
        if unknown:
            raise RecordingError(f"unknown cameras {sorted(unknown)}; this dataset has {self.camera_keys}")
        for key in self.camera_keys[1:]:
            if key not in extra:
                raise RecordingError(f"the step has no image from camera {key!r}")
            cams[key] = extra[key]
        return cams

    def _row(self, step: StepRecord) -> dict[str, Any]:
        h, w = self.image_size
        cams = self._cameras(step)
        row: dict[str, Any] = {}
        for key, cam in cams.items():
            rgb = np.asarray(cam.rgb)
            if rgb.dtype != np.uint8 or rgb.shape != (h, w, 3):
                raise RecordingError(f"camera {key!r}: rgb must be {h}x{w}x3 uint8, got {rgb.dtype} {rgb.shape}")
            if cam.depth is not None:
                d = np.asarray(cam.depth)
                if d.shape != (h, w) or not np.issubdtype(d.dtype, np.floating):
                    raise RecordingError(f"camera {key!r}: depth must be {h}x{w} float metres aligned to rgb, "
                                         f"got {d.dtype} {d.shape}")
            kvec, _, _ = _intrinsics_tuple(cam.intrinsics)
            row[fm.intrinsics_key(key)] = kvec
            row[fm.camera_time_key(key)] = float(cam.timestamp)
        if step.mode not in fm.MODES:
            raise RecordingError(f"unknown mode {step.mode!r}; one of {', '.join(fm.MODES)}")
        status = -1
        if step.status:
            if step.status not in fm.STATUSES:
                raise RecordingError(f"unknown status {step.status!r}; one of {', '.join(fm.STATUSES)}")
            status = fm.STATUSES.index(step.status)
        sent = step.action is not None if step.sent is None else bool(step.sent)
        action = _vector(step.action if sent else None, self._action_dim, "action", 0.0)
        if not np.all(np.isfinite(action)):
            raise RecordingError("the sent action must be finite (NaN/inf never reaches an arm)")
        trace, n_trace = _trace_array(step.trace, "trace")
        model_trace, n_model = _trace_array(step.trace if step.model_trace is None else step.model_trace,
                                            "model trace")
        codes = np.full(fm.NUM_DEPTH_TOKENS, -1, np.int16)
        dc = [int(c) for c in (step.depth_codes or ())]
        if len(dc) > fm.NUM_DEPTH_TOKENS or any(c < 0 or c > 32767 for c in dc):
            raise RecordingError(f"depth codes: at most {fm.NUM_DEPTH_TOKENS} non-negative codes, got {len(dc)}")
        codes[:len(dc)] = dc
        intervention = (bool(step.intervention) if step.intervention is not None
                        else bool(n_trace != n_model or not np.array_equal(trace, model_trace)))
        reasons = [str(r) for r in (step.safety_reasons or ())]
        row.update({
            "observation.state": _vector(step.state, self._state_dim, "state", 0.0),
            "action": action,
            "molmoact.action": _vector(step.model_action, self._action_dim, "model action", np.nan),
            "molmoact.action_normalized": _vector(step.model_action_normalized, self._action_dim,
                                                  "normalized model action", np.nan),
            "molmoact.trace": trace, "molmoact.trace_len": n_trace,
            "molmoact.model_trace": model_trace, "molmoact.model_trace_len": n_model,
            "molmoact.depth_codes": codes,
            "molmoact.mode": fm.MODES.index(step.mode),
            "intervention": intervention,
            "sent": sent,
            "safety.clipped": bool(reasons) if step.clipped is None else bool(step.clipped),
            "safety.reasons": "; ".join(reasons),
            "step.status": status,
            "step.index": int(step.step_index),
            "step.elapsed": float(step.timestamp) - self._episode.started_at,
        })
        return row

    def _encode(self, ep: _Episode, step: StepRecord) -> None:
        for key, cam in self._cameras(step).items():
            rk, dk = fm.rgb_key(key), fm.depth_key(key)
            if ep.length == 0:
                _, model, coeffs = _intrinsics_tuple(cam.intrinsics)
                ep.cameras[key] = {"distortion_model": model, "distortion_coeffs": coeffs,
                                   "exact_depth_unit": float(cam.depth_scale)}
                ep.encoders[rk] = video.StreamEncoder(ep.folder / f"{rk}.mp4", self.fps, self.image_size,
                                                      self.rgb_encoding)
                if self.depth:
                    ep.encoders[dk] = video.StreamEncoder(ep.folder / f"{dk}.mp4", self.fps, self.image_size,
                                                          self.depth_encoding)
                if self.exact_depth:
                    ep.encoders["exact:" + dk] = video.StreamEncoder(
                        ep.folder / f"{dk}.exact.mkv", self.fps, self.image_size,
                        fm.VideoEncoding(codec="ffv1", pix_fmt="gray16le", g=1, crf=None),
                        container_format="matroska")
            rgb = np.asarray(cam.rgb)
            ep.encoders[rk].add(rgb)
            ep.samples.setdefault(rk, _Thinned()).add(lambda: fm.downsample(rgb))
            if self.depth:
                d = (np.zeros(self.image_size, np.float32) if cam.depth is None
                     else np.asarray(cam.depth, np.float32))
                d = np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0))       # NaN/inf/negative: invalid (0)
                ep.encoders[dk].add(self.quantizer.quantize(d))
                ep.samples.setdefault(dk, _Thinned()).add(lambda: fm.downsample(d))
                if self.exact_depth:
                    unit = ep.cameras[key]["exact_depth_unit"]
                    ep.encoders["exact:" + dk].add(np.clip(np.rint(d / unit), 0, 65535).astype(np.uint16))

    def _finish_encoders(self, ep: _Episode) -> None:
        for name, enc in list(ep.encoders.items()):
            ep.files[name] = enc.finish()
            del ep.encoders[name]

    # ------------------------------------------------------------------------------------- one save
    def _stage_episode(self, ep: _Episode, txn: Transaction):
        info = json.loads(json.dumps(self._info))
        feats = info["features"]
        n = ep.length
        start = int(info["total_frames"])
        tasks = list(self._tasks)
        for t in ep.tasks:
            if t not in tasks:
                tasks.append(t)
        ep_tasks = list(dict.fromkeys(ep.tasks))

        # frame rows
        cols = {k: np.stack(v) if isinstance(v[0], np.ndarray) else np.asarray(v) for k, v in ep.columns.items()}
        cols["safety.reasons"] = list(ep.columns["safety.reasons"])
        cols.update({"timestamp": np.arange(n, dtype=np.float32) / np.float32(self.fps),
                     "frame_index": np.arange(n, dtype=np.int64),
                     "episode_index": np.full(n, ep.index, np.int64),
                     "index": np.arange(start, start + n, dtype=np.int64),
                     "task_index": np.array([tasks.index(t) for t in ep.tasks], np.int64)})
        new_table = tables.frame_table(cols, feats)

        last = self._last_row
        data_mb = float(info["data_files_size_in_mb"])
        chunks = int(info["chunks_size"])
        if last is None:
            d_chunk, d_file, old = 0, 0, None
        else:
            d_chunk, d_file = int(last["data/chunk_index"]), int(last["data/file_index"])
            path = self.root / info["data_path"].format(chunk_index=d_chunk, file_index=d_file)
            if path.stat().st_size / 2**20 >= data_mb:
                d_chunk, d_file, old = *fm.next_chunk_file(d_chunk, d_file, chunks), None
            else:
                old = tables.read_table(path, "the data file")
        data_rel = info["data_path"].format(chunk_index=d_chunk, file_index=d_file)
        if old is not None:
            if old.schema.remove_metadata() != new_table.schema.remove_metadata():
                raise RecordingError(f"{data_rel} has other columns than this recorder writes; the dataset was "
                                     f"left as it is")
            full = tables.pa.concat_tables([old.replace_schema_metadata(new_table.schema.metadata), new_table])
        else:
            full = new_table
        tables.write_episodes_grouped(txn.path(data_rel), full)

        # videos: appended to the newest file of each key while it stays under the size cap
        row: dict[str, Any] = {"episode_index": ep.index, "tasks": ep_tasks, "length": n,
                               "data/chunk_index": d_chunk, "data/file_index": d_file,
                               "dataset_from_index": start, "dataset_to_index": start + n}
        video_mb = float(info["video_files_size_in_mb"])
        video_paths = {}
        for key in fm.video_keys(feats):
            src = ep.files[key]
            if last is None or f"videos/{key}/chunk_index" not in last:
                v_chunk, v_file, concat_to = 0, 0, None
            else:
                v_chunk, v_file = int(last[f"videos/{key}/chunk_index"]), int(last[f"videos/{key}/file_index"])
                cur = self.root / info["video_path"].format(video_key=key, chunk_index=v_chunk, file_index=v_file)
                if (cur.stat().st_size + src.stat().st_size) / 2**20 >= video_mb:
                    v_chunk, v_file, concat_to = *fm.next_chunk_file(v_chunk, v_file, chunks), None
                else:
                    concat_to = cur
            rel = info["video_path"].format(video_key=key, chunk_index=v_chunk, file_index=v_file)
            if concat_to is None:
                from_ts = 0.0
                _stage(src, txn.path(rel))
            else:
                from_ts = float(last[f"videos/{key}/to_timestamp"])
                video.concatenate(concat_to, src, txn.path(rel), from_ts)
            row[f"videos/{key}/chunk_index"] = v_chunk
            row[f"videos/{key}/file_index"] = v_file
            row[f"videos/{key}/from_timestamp"] = from_ts
            row[f"videos/{key}/to_timestamp"] = from_ts + n / self.fps
            video_paths[key] = rel
            feat_info = feats[key].setdefault("info", {})
            if "video.codec" not in feat_info:           # the first episode: what the files really are
                enc = self.depth_encoding if fm.is_depth(feats[key]) else self.rgb_encoding
                probed = video.probe(src)
                merged = {**probed}
                for k, v in enc.info().items():
                    merged.setdefault(k, v)
                if fm.is_depth(feats[key]):
                    merged.update(self.quantizer.info())
                feats[key]["info"] = {**merged, **{k: v for k, v in feat_info.items() if k not in probed}}
        for key in self.camera_keys:
            cam = ep.cameras[key]
            row[f"camera/{key}/distortion_model"] = cam["distortion_model"]
            row[f"camera/{key}/distortion_coeffs"] = [float(c) for c in cam["distortion_coeffs"]]
            if self.exact_depth:
                dk = fm.depth_key(key)
                rel = fm.EXACT_DEPTH_PATH.format(video_key=dk, chunk_index=ep.index // chunks,
                                                 episode_index=ep.index)
                _stage(ep.files["exact:" + dk], txn.path(rel))
                row[f"extras/{dk}/exact_path"] = rel
                row[f"extras/{dk}/exact_unit_m"] = float(cam["exact_depth_unit"])
        row["station/started_at"] = float(ep.started_at)
        row["station/saved_at"] = float(time.time())

        # stats (this episode's, then the dataset's)
        ep_stats: dict[str, dict[str, np.ndarray]] = {}
        for k in tables.frame_columns(feats):
            if feats[k]["dtype"] == "string":
                continue
            ep_stats[k] = fm.feature_stats(np.asarray(cols[k]))
        for key in fm.video_keys(feats):
            scale = 1.0 if fm.is_depth(feats[key]) else 255.0
            ep_stats[key] = fm.image_stats(ep.samples[key].sample(), scale)
        for k, st in sorted(ep_stats.items()):
            for s, v in st.items():
                row[f"stats/{k}/{s}"] = np.asarray(v).tolist()

        # the episode table: the newest file grows while under the data size cap
        if last is None:
            m_chunk, m_file, rows = 0, 0, []
        else:
            m_chunk, m_file = int(last["meta/episodes/chunk_index"]), int(last["meta/episodes/file_index"])
            cur = self.root / fm.EPISODES_PATH.format(chunk_index=m_chunk, file_index=m_file)
            if cur.stat().st_size / 2**20 >= data_mb:
                m_chunk, m_file, rows = *fm.next_chunk_file(m_chunk, m_file, chunks), []
            else:
                rows = list(self._episode_rows)
        row["meta/episodes/chunk_index"] = m_chunk
        row["meta/episodes/file_index"] = m_file
        if rows and set(rows[0]) != set(row):
            name = fm.EPISODES_PATH.format(chunk_index=m_chunk, file_index=m_file)
            raise RecordingError(f"the episode table {name} has other columns than this recorder writes; the "
                                 f"dataset was left as it is")
        rows = rows + [row]
        tables.pq.write_table(tables.episodes_table(rows), str(txn.path(
            fm.EPISODES_PATH.format(chunk_index=m_chunk, file_index=m_file))), compression="snappy")

        if tasks != self._tasks:
            tables.pq.write_table(tables.tasks_table(tasks), str(txn.path(fm.TASKS_PATH)))
        stats = fm.aggregate_stats([self._stats, ep_stats]) if self._stats else ep_stats
        txn.write_json(fm.STATS_PATH, fm.stats_to_json(stats))
        info["total_episodes"] = ep.index + 1
        info["total_frames"] = start + n
        info["total_tasks"] = len(tasks)
        info["splits"] = {"train": f"0:{ep.index + 1}"}
        txn.write_json(fm.INFO_PATH, info)

        saved = SavedEpisode(ep.index, n, ep_tasks, data_rel, video_paths)
        return saved, (info, stats, tasks, rows, row)


__all__ = ["CameraSample", "EpisodeRecorder", "RecordingError", "SavedEpisode", "StepRecord"]
