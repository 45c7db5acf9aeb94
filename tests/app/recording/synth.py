"""Small synthetic steps and an independent check that a dataset's metadata matches its files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq

from app.devices.camera import Intrinsics
from app.recording import StepRecord

H, W = 48, 64
FPS = 10
K = Intrinsics(W, H, 52.5, 53.0, 31.5, 23.5, "brown_conrady", (0.1, -0.05, 0.0, 0.0, 0.01))
TASK = "pick up the red cube"


def rgb_image(ep: int, i: int) -> np.ndarray:
    """Smooth gradients (a video codec keeps them well) that differ per episode and frame."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 2 + i * 12, y * 4 + ep * 12, x + y + i * 6 + ep * 9], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def depth_image(ep: int, i: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    d = (0.35 + 0.02 * x + 0.01 * y + 0.05 * i + 0.3 * ep).astype(np.float32)
    d[0, :4] = 0.0                                             # invalid pixels, as a sensor reports them
    return d


def model_trace(i: int) -> list[tuple[int, int]]:
    return [(20, 200), (60 + i, 150), (120, 100 - i)]


def step(ep: int, i: int, *, instruction: str = TASK, **kw) -> StepRecord:
    edited = i % 3 == 2
    trace = model_trace(i) if not edited else [(20, 200), (90, 140), (200 - i, 40), (255, 0)]
    sent = i % 2 == 1
    args = dict(
        rgb=rgb_image(ep, i), depth=depth_image(ep, i), intrinsics=K, instruction=instruction,
        camera_timestamp=1000.0 + ep * 100 + i / FPS, timestamp=1.7e9 + ep * 100 + i * 0.5,
        state=[0.4 + 0.01 * i, -0.1, 0.3, 3.1, 0.0, 0.2 * ep, 0.5],
        action=[0.01, -0.02 * i, 0.0, 0.0, 0.0, 0.05, 1.0] if sent else None,
        model_action=[0.012, -0.02 * i, 0.001, 0.0, 0.0, 0.05, 1.0],
        model_action_normalized=[0.1, -0.2, 0.0, 0.0, 0.0, 0.5, 1.0],
        trace=trace, model_trace=model_trace(i), depth_codes=[(i * 7 + k) % 128 for k in range(100)],
        mode="steer_text" if edited else "reason",
        safety_reasons=["translation clipped to 3 cm"] if i == 3 else [], status="sent" if sent else "refused",
        step_index=ep * 100 + i)
    args.update(kw)
    return StepRecord(**args)


def file_digests(root: Path) -> dict[str, str]:
    """Every file under root (staging excluded) and its content hash."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and ".staging" not in p.parts:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.size and p.pts is not None)


def check_dataset(root: Path) -> dict:
    """Assert that meta/info.json, the episode table, the data files and the videos agree. Returns info."""
    root = Path(root)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    for key in ("robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
                "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path",
                "features"):
        assert key in info, key
    fps, feats = info["fps"], info["features"]
    n_eps, n_frames = info["total_episodes"], info["total_frames"]
    assert info["splits"] == ({"train": f"0:{n_eps}"} if n_eps else {})

    tasks = pq.read_table(root / "meta/tasks.parquet").to_pydict()
    assert sorted(tasks["task_index"]) == list(range(info["total_tasks"]))

    eps = []
    for p in sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet")):
        eps += pq.read_table(p).to_pylist()
    assert [e["episode_index"] for e in eps] == list(range(n_eps))

    data_files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    data = [pq.read_table(p) for p in data_files]
    assert sum(t.num_rows for t in data) == n_frames
    columns = set(data[0].column_names)
    video_keys = [k for k, f in feats.items() if f["dtype"] == "video"]
    assert columns == {k for k in feats if k not in video_keys}
    rows = {}
    for t in data:
        for r in t.to_pylist():
            rows[r["index"]] = r
    assert sorted(rows) == list(range(n_frames))

    expected_from = 0
    per_video_file: dict[str, int] = {}
    for e in eps:
        n = e["length"]
        assert e["dataset_from_index"] == expected_from and e["dataset_to_index"] == expected_from + n
        expected_from += n
        data_path = root / info["data_path"].format(chunk_index=e["data/chunk_index"],
                                                    file_index=e["data/file_index"])
        assert data_path.exists(), data_path
        ep_rows = [r for r in pq.read_table(data_path).to_pylist() if r["episode_index"] == e["episode_index"]]
        assert len(ep_rows) == n
        for j, r in enumerate(sorted(ep_rows, key=lambda r: r["frame_index"])):
            assert r["frame_index"] == j and r["index"] == e["dataset_from_index"] + j
            assert np.float32(r["timestamp"]) == np.float32(j) / np.float32(fps)
            assert 0 <= r["task_index"] < info["total_tasks"]
        assert set(e["tasks"]) == {tasks["task"][tasks["task_index"].index(r["task_index"])] for r in ep_rows}
        for key in video_keys:
            vpath = root / info["video_path"].format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                                     file_index=e[f"videos/{key}/file_index"])
            assert vpath.exists(), vpath
            t0, t1 = e[f"videos/{key}/from_timestamp"], e[f"videos/{key}/to_timestamp"]
            assert abs((t1 - t0) - n / fps) < 1e-6
            times = frame_times(vpath)
            inside = [t for t in times if t0 - 1e-4 <= t < t1 - 1e-4]
            assert len(inside) == n, (key, e["episode_index"], len(inside), n)
            assert all(abs(t - (t0 + j / fps)) < 1e-4 for j, t in enumerate(inside))
            per_video_file[str(vpath)] = per_video_file.get(str(vpath), 0) + n
            for name in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
                assert f"videos/{key}/{name}" in e
        assert (root / "meta/episodes" / f"chunk-{e['meta/episodes/chunk_index']:03d}"
                / f"file-{e['meta/episodes/file_index']:03d}.parquet").exists()
    for path, n in per_video_file.items():
        assert len(frame_times(Path(path))) == n                                 # nothing else in the file

    # shapes: every value has its feature's shape; videos are as big as their features say
    sample = rows[0] if rows else None
    for k, f in feats.items():
        if f["dtype"] == "video":
            vi = f["info"]
            assert (vi["video.height"], vi["video.width"], vi["video.channels"]) == tuple(f["shape"])
            assert vi["is_depth_map"] == (f["shape"][2] == 1)
        elif sample is not None and f["dtype"] != "string" and f["shape"] != [1]:
            assert np.asarray(sample[k]).shape == tuple(f["shape"]), k

    stats = json.loads((root / "meta/stats.json").read_text()) if n_eps else {}
    for k, f in feats.items():
        if not n_eps or f["dtype"] == "string":
            continue
        st = stats[k]
        for s in ("mean", "std", "min", "max", "count", "q01", "q50", "q99"):
            assert s in st, (k, s)
        shape = np.asarray(st["mean"]).shape
        if f["dtype"] == "video":
            assert shape == (f["shape"][2], 1, 1), (k, shape)
        else:
            assert shape == tuple(f["shape"]), (k, shape)
            assert st["count"] == [n_frames], k
    return info
