"""Read a recorded dataset back, one step at a time, for the replay view (Qt-free).

    reader = EpisodeReader("~/datasets/cell1")
    for ep in reader.episodes():
        f = reader.frame(ep.episode_index, 0)      # rgb, depth (metres), intrinsics, traces, actions, ...

Frames are decoded from the videos by time (``from_timestamp + frame_index / fps``), as lerobot does;
stepping forward through an episode decodes each frame once. Depth comes from the exact sidecar when the
episode has one (``depth_exact`` true), otherwise from the 12-bit stream (within half a code step; code 0
reads as 0, invalid).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.devices.camera import Intrinsics

from . import format as fm
from . import tables, video
from .store import RecordingError

Point = tuple[int, int]


@dataclass(frozen=True)
class EpisodeInfo:
    episode_index: int
    length: int
    tasks: list[str]
    dataset_from_index: int
    dataset_to_index: int
    row: dict[str, Any] = field(repr=False, compare=False)   # the whole meta/episodes row


@dataclass
class RecordedFrame:
    episode_index: int
    frame_index: int
    index: int                                   # global frame index in the dataset
    timestamp: float                             # frame_index / fps
    wall_time: float                             # when the step happened (the station's clock)
    camera: str
    camera_timestamp: float
    instruction: str
    rgb: np.ndarray | None                       # HxWx3 uint8 (None with images=False)
    depth: np.ndarray | None                     # HxW float32 metres, 0 = invalid
    depth_exact: bool                            # from the lossless sidecar (else the 12-bit stream)
    intrinsics: Intrinsics | None
    trace: list[Point]                           # the trace the action came from (the operator's when edited)
    model_trace: list[Point]                     # what the model said
    depth_codes: list[int]
    state: np.ndarray
    action: np.ndarray                           # what the arm was sent (zeros when nothing was)
    sent: bool
    model_action: np.ndarray
    model_action_normalized: np.ndarray
    mode: str
    status: str | None
    intervention: bool
    safety_clipped: bool
    safety_reasons: list[str]
    step_index: int


def _trace(arr: Any, n: Any) -> list[Point]:
    a = np.asarray(arr).reshape(-1, 2)[: int(n)]
    return [(int(x), int(y)) for x, y in a]


class EpisodeReader:
    """Random access to the steps of a LeRobotDataset v3.0 recorded by ``EpisodeRecorder``."""

    def __init__(self, root: str | Path, *, exact_depth: bool = True, max_open_videos: int = 8) -> None:
        self.root = Path(root).expanduser()
        self.exact_depth = exact_depth
        info_path = self.root / fm.INFO_PATH
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise RecordingError(f"{self.root} is not a LeRobot dataset (no meta/info.json)") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecordingError(f"{info_path} is unreadable: {e}") from e
        version = info.get("codebase_version") if isinstance(info, dict) else None
        if version != fm.CODEBASE_VERSION:
            raise RecordingError(f"{self.root}: not a LeRobot {fm.CODEBASE_VERSION} dataset "
                                 f"(codebase_version {version!r})")
        needed = {"molmoact.trace", "molmoact.model_trace", "action", "sent"}
        missing = sorted(needed - set(info.get("features", {})))
        if missing:
            raise RecordingError(f"{self.root} was not recorded by the station (no {', '.join(missing)} features)")
        self.info = info
        self.fps = int(info["fps"])
        self.features: dict[str, dict] = info["features"]
        self.robot_type = info.get("robot_type")
        prefix = "observation.images."
        self.camera_keys = [k[len(prefix):] for k, f in self.features.items()
                            if k.startswith(prefix) and f.get("dtype") == "video" and not fm.is_depth(f)]
        self._tasks = tables.read_tasks(self.root / fm.TASKS_PATH) if info.get("total_tasks") else []
        rows: list[dict] = []
        for p in sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
            rows += tables.read_table(p, "the episode table").to_pylist()
        rows.sort(key=lambda r: int(r["episode_index"]))
        if [int(r["episode_index"]) for r in rows] != list(range(len(rows))):
            raise RecordingError(f"{self.root}: the episode table does not number its episodes 0..{len(rows) - 1}")
        if len(rows) != int(info.get("total_episodes", 0)):
            raise RecordingError(f"{self.root}: info.json says {info.get('total_episodes')} episodes, "
                                 f"meta/episodes has {len(rows)}")
        self._episodes = [EpisodeInfo(int(r["episode_index"]), int(r["length"]), list(r["tasks"]),
                                      int(r["dataset_from_index"]), int(r["dataset_to_index"]), r) for r in rows]
        self._data: dict[int, dict[str, np.ndarray | list]] = {}
        self._decoders: OrderedDict[Path, video.FrameDecoder] = OrderedDict()
        self._max_open = max(1, int(max_open_videos))

    # ------------------------------------------------------------------------------------- episodes
    def episodes(self) -> list[EpisodeInfo]:
        return list(self._episodes)

    def episode(self, episode_index: int) -> EpisodeInfo:
        if not 0 <= episode_index < len(self._episodes):
            raise IndexError(f"episode {episode_index} is not in {self.root} ({len(self._episodes)} episodes)")
        return self._episodes[episode_index]

    def num_frames(self, episode_index: int) -> int:
        return self.episode(episode_index).length

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    def steps(self, episode_index: int) -> dict[str, np.ndarray | list]:
        """Every per-step column of an episode (no images), e.g. for plotting its actions."""
        ep = self.episode(episode_index)
        cached = self._data.get(episode_index)
        if cached is not None:
            return cached
        r = ep.row
        path = self.root / self.info["data_path"].format(chunk_index=r["data/chunk_index"],
                                                         file_index=r["data/file_index"])
        table = tables.read_table(path, "the data file")
        idx = table.column("episode_index").to_numpy()
        sel = np.nonzero(idx == episode_index)[0]
        if len(sel) != ep.length:
            raise RecordingError(f"{path} has {len(sel)} rows of episode {episode_index}, "
                                 f"its metadata says {ep.length}")
        part = table.take(sel)
        cols: dict[str, np.ndarray | list] = {}
        for name in part.column_names:
            col = part.column(name)
            cols[name] = col.to_pylist() if self.features[name]["dtype"] == "string" else \
                np.asarray(col.to_pylist(), dtype=self.features[name]["dtype"])
        order = np.argsort(cols["frame_index"])
        cols = {k: ([v[i] for i in order] if isinstance(v, list) else v[order]) for k, v in cols.items()}
        if len(self._data) >= 4:
            self._data.pop(next(iter(self._data)))
        self._data[episode_index] = cols
        return cols

    # ------------------------------------------------------------------------------------- frames
    def frame(self, episode_index: int, frame_index: int, camera: str | None = None, *,
              images: bool = True) -> RecordedFrame:
        ep = self.episode(episode_index)
        if not 0 <= frame_index < ep.length:
            raise IndexError(f"frame {frame_index} is not in episode {episode_index} ({ep.length} frames)")
        cam = camera or self.camera_keys[0]
        if cam not in self.camera_keys:
            raise KeyError(f"no camera {cam!r}; the dataset has {self.camera_keys}")
        c = self.steps(episode_index)
        i = frame_index
        rgb = depth = None
        exact = False
        if images:
            rgb = self._video(ep, fm.rgb_key(cam), i, "rgb24")
            dk = fm.depth_key(cam)
            if dk in self.features:
                depth, exact = self._depth(ep, dk, i)
        h, w = (self.features[fm.rgb_key(cam)]["shape"][:2])
        kvec = c.get(fm.intrinsics_key(cam))
        intr = None
        if kvec is not None and np.all(np.isfinite(kvec[i])):
            fx, fy, cx, cy = (float(v) for v in kvec[i])
            coeffs = ep.row.get(f"camera/{cam}/distortion_coeffs") or [0.0] * 5
            model = str(ep.row.get(f"camera/{cam}/distortion_model", "none"))
            intr = Intrinsics(int(w), int(h), fx, fy, cx, cy, model, tuple(float(x) for x in coeffs))
        status = int(c["step.status"][i])
        reasons = c["safety.reasons"][i]
        task_index = int(c["task_index"][i])
        return RecordedFrame(
            episode_index=episode_index, frame_index=i, index=int(c["index"][i]),
            timestamp=float(c["timestamp"][i]),
            wall_time=float(ep.row.get("station/started_at", 0.0)) + float(c["step.elapsed"][i]), camera=cam,
            camera_timestamp=float(c[fm.camera_time_key(cam)][i]),
            instruction=self._tasks[task_index] if 0 <= task_index < len(self._tasks) else "",
            rgb=rgb, depth=depth, depth_exact=exact, intrinsics=intr,
            trace=_trace(c["molmoact.trace"][i], c["molmoact.trace_len"][i]),
            model_trace=_trace(c["molmoact.model_trace"][i], c["molmoact.model_trace_len"][i]),
            depth_codes=[int(x) for x in c["molmoact.depth_codes"][i] if x >= 0],
            state=np.asarray(c["observation.state"][i], np.float32), action=np.asarray(c["action"][i], np.float32),
            sent=bool(c["sent"][i]), model_action=np.asarray(c["molmoact.action"][i], np.float32),
            model_action_normalized=np.asarray(c["molmoact.action_normalized"][i], np.float32),
            mode=fm.MODES[int(c["molmoact.mode"][i])],
            status=fm.STATUSES[status] if 0 <= status < len(fm.STATUSES) else None,
            intervention=bool(c["intervention"][i]), safety_clipped=bool(c["safety.clipped"][i]),
            safety_reasons=[s for s in reasons.split("; ") if s] if reasons else [],
            step_index=int(c["step.index"][i]))

    def _decoder(self, path: Path) -> video.FrameDecoder:
        dec = self._decoders.get(path)
        if dec is None:
            if not path.exists():
                raise RecordingError(f"the video {path} is missing")
            dec = video.FrameDecoder(path)
            self._decoders[path] = dec
            while len(self._decoders) > self._max_open:
                self._decoders.popitem(last=False)[1].close()
        else:
            self._decoders.move_to_end(path)
        return dec

    def _video(self, ep: EpisodeInfo, key: str, i: int, fmt: str) -> np.ndarray:
        r = ep.row
        path = self.root / self.info["video_path"].format(
            video_key=key, chunk_index=r[f"videos/{key}/chunk_index"], file_index=r[f"videos/{key}/file_index"])
        t = float(r[f"videos/{key}/from_timestamp"]) + i / self.fps
        return self._decoder(path).get(t, self.fps, fmt)

    def _depth(self, ep: EpisodeInfo, key: str, i: int) -> tuple[np.ndarray, bool]:
        rel = ep.row.get(f"extras/{key}/exact_path")
        if self.exact_depth and rel and (self.root / rel).exists():
            unit = float(ep.row.get(f"extras/{key}/exact_unit_m") or 0.001)
            raw = self._decoder(self.root / rel).get(i / self.fps, self.fps, "gray16le")
            return raw.astype(np.float32) * np.float32(unit), True
        codes = self._video(ep, key, i, "gray12le")
        q = fm.DepthQuantizer.from_info(self.features[key].get("info"))
        return q.dequantize(codes), False

    def close(self) -> None:
        for dec in self._decoders.values():
            dec.close()
        self._decoders.clear()
        self._data.clear()

    def __enter__(self) -> "EpisodeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["EpisodeInfo", "EpisodeReader", "RecordedFrame"]
