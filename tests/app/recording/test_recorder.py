"""EpisodeRecorder writes the LeRobotDataset v3.0 layout; EpisodeReader gives every step back."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from app.recording import DepthQuantizer, EpisodeReader, EpisodeRecorder, RecordingError, StepRecord
from app.recording import format as fm
from tests.app.recording.synth import FPS, H, K, TASK, W, check_dataset, depth_image, model_trace, rgb_image, step

N = 10


def record(root, episodes=2, n=N, discard_between=True, **kw) -> EpisodeRecorder:
    rec = EpisodeRecorder(root, fps=FPS, robot_type="sim_panda", image_size=(H, W), **kw)
    for e in range(episodes):
        rec.start_episode(TASK)
        for i in range(n):
            rec.add_step(step(rec.episode_index, i, instruction=TASK if i < 7 else "lift it"))
        rec.save_episode()
        if discard_between and e == 0:
            rec.start_episode("this one is re-recorded")
            for i in range(3):
                rec.add_step(step(9, i, instruction="this one is re-recorded"))
            rec.discard_episode()
    rec.close()
    return rec


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec") / "ds"
    record(root)
    return root


def test_layout_and_info_match_the_files(dataset):
    info = check_dataset(dataset)
    assert info["total_episodes"] == 2 and info["total_frames"] == 2 * N and info["total_tasks"] == 2
    assert info["fps"] == FPS and info["robot_type"] == "sim_panda"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    files = {str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file() and ".staging" not in p.parts}
    assert files == {
        "meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
        "data/chunk-000/file-000.parquet",
        "videos/observation.images.front/chunk-000/file-000.mp4",
        "videos/observation.images.front_depth/chunk-000/file-000.mp4",
        "extras/depth/observation.images.front_depth/chunk-000/episode-000000.mkv",
        "extras/depth/observation.images.front_depth/chunk-000/episode-000001.mkv",
    }
    # the discarded episode left nothing behind
    assert not [p for p in (dataset / ".staging").iterdir() if p.name != "lock"]


def test_features_are_described_as_lerobot_does(dataset):
    feats = json.loads((dataset / "meta/info.json").read_text())["features"]
    rgb, depth = feats["observation.images.front"], feats["observation.images.front_depth"]
    assert rgb["dtype"] == depth["dtype"] == "video"
    assert rgb["shape"] == [H, W, 3] and depth["shape"] == [H, W, 1]
    assert rgb["names"] == ["height", "width", "channels"]
    assert rgb["info"]["video.codec"] == "av1" and rgb["info"]["video.pix_fmt"] == "yuv420p"
    assert rgb["info"]["is_depth_map"] is False and rgb["info"]["video.fps"] == FPS
    di = depth["info"]
    assert di["is_depth_map"] is True and di["depth_unit"] == "m"
    assert di["video.codec"] == "hevc" and di["video.pix_fmt"] == "gray12le"
    quant = (di["video.depth_min"], di["video.depth_max"], di["video.shift"], di["video.use_log"])
    assert quant == (0.01, 10.0, 3.5, True)
    assert "lossless=1" in di["video.extra_options"]["x265-params"]
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert key in feats
    assert feats["molmoact.trace"] == {"dtype": "int16", "shape": [5, 2], "names": ["waypoint", "xy"]}
    assert feats["molmoact.depth_codes"]["shape"] == [100]
    assert feats["molmoact.mode"]["info"]["categories"] == ["reason", "steer_visual", "steer_text"]
    assert feats["safety.reasons"]["dtype"] == "string"
    assert feats["intervention"]["dtype"] == feats["sent"]["dtype"] == feats["safety.clipped"]["dtype"] == "bool"
    assert feats["camera.front.intrinsics"]["names"] == ["fx", "fy", "cx", "cy"]
    assert not any(k.startswith("observation.") and f["dtype"] != "video" and k != "observation.state"
                   for k, f in feats.items())          # lerobot policies take observation.* as state inputs


def test_episode_rows_and_tasks(dataset):
    rows = pq.read_table(dataset / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1]
    assert [r["length"] for r in rows] == [N, N]
    assert rows[0]["tasks"] == [TASK, "lift it"]
    assert rows[1]["videos/observation.images.front/from_timestamp"] == pytest.approx(N / FPS)
    assert rows[0]["camera/front/distortion_model"] == "brown_conrady"
    assert rows[0]["camera/front/distortion_coeffs"] == pytest.approx(list(K.coeffs))
    assert "stats/action/mean" in rows[0] and "stats/observation.images.front/mean" in rows[0]
    tasks = pq.read_table(dataset / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == [TASK, "lift it"]
    assert tasks.column("task_index").to_pylist() == [0, 1]
    # pd.read_parquet gives the DataFrame indexed by task lerobot expects
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    data_path = dataset / "data/chunk-000/file-000.parquet"
    data = pq.read_table(data_path)
    assert pq.ParquetFile(data_path).metadata.num_row_groups == 2          # one per episode, as lerobot writes
    assert b"huggingface" in data.schema.metadata


def test_round_trip_through_the_reader(dataset):
    with EpisodeReader(dataset) as r:
        assert [e.episode_index for e in r.episodes()] == [0, 1]
        assert r.camera_keys == ["front"] and r.fps == FPS
        q = DepthQuantizer()
        for e in (0, 1):
            for i in [0, 1, 2, 3, 9, 4, 8]:                          # forward, then a jump back, then forward
                f = r.frame(e, i)
                s = step(e, i)
                assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
                err = np.abs(f.rgb.astype(int) - rgb_image(e, i)).mean()
                assert err < 3.0                                                    # AV1 at crf 30
                for j in (i - 1, i + 1):                                            # and it is frame i
                    if 0 <= j < N:
                        assert err < np.abs(f.rgb.astype(int) - rgb_image(e, j)).mean()
                assert f.depth_exact and np.abs(f.depth - depth_image(e, i)).max() <= 0.0005 + 1e-6  # 1 mm units
                assert f.depth[0, 0] == 0.0                                         # invalid stays invalid
                assert f.trace == [tuple(p) for p in s.trace] and f.model_trace == model_trace(i)
                assert f.depth_codes == list(s.depth_codes)
                assert f.sent == (i % 2 == 1)
                expected = np.asarray(s.action if f.sent else np.zeros(7), np.float32)
                np.testing.assert_array_equal(f.action, expected)
                np.testing.assert_array_equal(f.model_action, np.asarray(s.model_action, np.float32))
                np.testing.assert_array_equal(f.state, np.asarray(s.state, np.float32))
                assert f.mode == s.mode and f.intervention == (i % 3 == 2)
                assert f.safety_reasons == list(s.safety_reasons) and f.safety_clipped == (i == 3)
                assert f.status == s.status and f.step_index == s.step_index
                assert f.instruction == (TASK if i < 7 else "lift it")
                assert f.intrinsics == K
                assert f.timestamp == pytest.approx(i / FPS) and f.index == e * N + i
                assert f.wall_time == pytest.approx(s.timestamp, abs=1e-6)
                assert f.camera_timestamp == pytest.approx(s.camera_timestamp)
    with EpisodeReader(dataset, exact_depth=False) as r:                     # the 12-bit lerobot stream
        for e, i in [(0, 0), (1, 7)]:
            f = r.frame(e, i)
            truth = depth_image(e, i)
            assert not f.depth_exact
            valid = truth > 0
            tol = np.array([q.step_at(float(d)) / 2 for d in truth[valid]]) + 1e-5
            assert np.all(np.abs(f.depth[valid] - truth[valid]) <= tol)
            assert np.all(f.depth[~valid] == 0.0)


def test_stats_cover_every_numeric_feature(dataset):
    stats = json.loads((dataset / "meta/stats.json").read_text())
    feats = json.loads((dataset / "meta/info.json").read_text())["features"]
    assert set(stats) == {k for k, f in feats.items() if f["dtype"] != "string"}
    with EpisodeReader(dataset) as r:
        actions = np.concatenate([r.steps(e)["action"] for e in (0, 1)])
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(axis=0))
    assert stats["frame_index"]["max"] == [N - 1] and stats["index"]["max"] == [2 * N - 1]
    rgb = stats["observation.images.front"]
    assert np.asarray(rgb["mean"]).shape == (3, 1, 1) and 0 <= np.min(rgb["min"]) and np.max(rgb["max"]) <= 1
    depth = stats["observation.images.front_depth"]
    assert np.asarray(depth["max"]).shape == (1, 1, 1) and depth["max"][0][0][0] > 1.0   # metres, not /255


def test_appending_continues_the_dataset(tmp_path):
    root = tmp_path / "ds"
    record(root, episodes=1, discard_between=False)
    before = (root / "meta/info.json").read_text()
    rec = EpisodeRecorder(root, fps=FPS, robot_type="sim_panda", image_size=(H, W))
    assert rec.total_episodes == 1 and rec.episode_index == 1
    assert rec.start_episode("a new task") == 1
    for i in range(4):
        rec.add_step(step(1, i, instruction="a new task"))
    saved = rec.save_episode()
    rec.close()
    assert saved.episode_index == 1 and saved.length == 4 and json.loads(before)["total_frames"] == N
    info = check_dataset(root)
    assert info["total_episodes"] == 2 and info["total_frames"] == N + 4 and info["total_tasks"] == 3
    with EpisodeReader(root) as r:
        f = r.frame(1, 3)
        assert f.index == N + 3 and f.instruction == "a new task"
        assert np.abs(f.rgb.astype(int) - rgb_image(1, 3)).mean() < 3.0
        assert r.frame(0, 9).instruction == "lift it"


def test_files_roll_over_at_their_size_caps(tmp_path):
    """Tiny caps: each episode starts new data/video/episode files, as lerobot does past 100/200 MB."""
    root = tmp_path / "ds"
    record(root, episodes=3, n=4, discard_between=False, data_files_size_in_mb=1e-6,
           video_files_size_in_mb=1e-6, chunks_size=2)
    info = check_dataset(root)
    assert info["total_episodes"] == 3
    assert (root / "data/chunk-001/file-000.parquet").exists()                    # 2 files per chunk
    assert (root / "videos/observation.images.front/chunk-001/file-000.mp4").exists()
    with EpisodeReader(root) as r:
        assert np.abs(r.frame(2, 3).rgb.astype(int) - rgb_image(2, 3)).mean() < 3.0


def test_close_saves_the_open_episode_and_is_idempotent(tmp_path):
    rec = EpisodeRecorder(tmp_path / "ds", fps=FPS, image_size=(H, W))
    rec.start_episode(TASK)
    for i in range(3):
        rec.add_step(step(0, i))
    rec.close()
    rec.close()
    assert check_dataset(tmp_path / "ds")["total_frames"] == 3
    with pytest.raises(RecordingError, match="closed"):
        rec.start_episode(TASK)


def test_bad_steps_are_refused_and_leave_the_episode_intact(tmp_path):
    rec = EpisodeRecorder(tmp_path / "ds", fps=FPS, image_size=(H, W))
    with pytest.raises(RecordingError, match="start_episode"):
        rec.add_step(step(0, 0))
    rec.start_episode(TASK)
    rec.add_step(step(0, 0))
    bad = [
        (dict(rgb=np.zeros((H, W + 2, 3), np.uint8)), "rgb must be"),
        (dict(depth=np.zeros((H, W), np.uint16)), "depth must be"),
        (dict(action=[np.nan] * 7), "finite"),
        (dict(action=[0.0] * 6), "7 values"),
        (dict(trace=[(1, 1)] * 6), "at most 5"),
        (dict(mode="dream"), "unknown mode"),
        (dict(status="exploded"), "unknown status"),
        (dict(depth_codes=list(range(101))), "depth codes"),
    ]
    for kw, msg in bad:
        with pytest.raises(RecordingError, match=msg):
            rec.add_step(step(0, 1, **kw))
    assert rec.num_frames == 1
    rec.add_step(step(0, 1))
    assert rec.save_episode().length == 2
    with pytest.raises(RecordingError, match="no episode"):
        rec.save_episode()
    rec.start_episode(TASK)
    with pytest.raises(RecordingError, match="no steps"):
        rec.save_episode()
    with pytest.raises(RecordingError, match="still open"):
        rec.start_episode(TASK)
    rec.close()
    assert check_dataset(tmp_path / "ds")["total_episodes"] == 1


def test_a_camera_without_depth_and_no_arm(tmp_path):
    """No depth image and no arm: depth is all invalid, state and the sent action zeros, sent false."""
    rec = EpisodeRecorder(tmp_path / "ds", fps=FPS, image_size=(H, W))
    rec.start_episode(TASK)
    rec.add_step(StepRecord(rgb=rgb_image(0, 0), instruction=TASK, intrinsics=(50.0, 50.0, 32.0, 24.0),
                            trace=[(1, 2)], mode="reason"))
    rec.add_step(StepRecord(rgb=rgb_image(0, 1), instruction="", trace=[]))   # no instruction: the episode's
    rec.close()
    with EpisodeReader(tmp_path / "ds") as r:
        f = r.frame(0, 0)
        assert np.all(f.depth == 0) and not f.sent and not f.action.any() and not f.state.any()
        assert f.intrinsics.fx == 50.0 and f.intrinsics.width == W
        g = r.frame(0, 1)
        assert g.instruction == TASK and g.trace == [] and g.intrinsics is None
        assert np.isnan(g.model_action).all()                                  # no model output recorded


def test_two_cameras(tmp_path):
    from app.recording import CameraSample
    rec = EpisodeRecorder(tmp_path / "ds", fps=FPS, camera_keys=("front", "wrist"), image_size=(H, W),
                          exact_depth=False)
    rec.start_episode(TASK)
    for i in range(3):
        wrist = CameraSample(rgb=rgb_image(5, i), depth=depth_image(5, i), intrinsics=K)
        rec.add_step(step(0, i, extra_cameras={"wrist": wrist}))
    with pytest.raises(RecordingError, match="no image from camera 'wrist'"):
        rec.add_step(step(0, 3))
    rec.close()
    check_dataset(tmp_path / "ds")
    with EpisodeReader(tmp_path / "ds") as r:
        assert r.camera_keys == ["front", "wrist"]
        f = r.frame(0, 2, camera="wrist")
        assert np.abs(f.rgb.astype(int) - rgb_image(5, 2)).mean() < 3.0
        assert not f.depth_exact and np.abs(f.depth - depth_image(5, 2))[depth_image(5, 2) > 0].max() < 0.003


def test_from_session_objects(tmp_path):
    """StepRecord.from_action_step takes the session's ActionStep and the camera's Frame as they are."""
    from app.devices.camera import Frame
    from app.session import ActionStep
    frame = Frame(rgb=rgb_image(0, 0), depth=depth_image(0, 0), intrinsics=K, timestamp=12.5, serial="sim")
    st = ActionStep(index=7, mode="steer_text", trace=[(20, 200), (99, 99)], action_normalized=np.full(7, 0.1),
                    action=np.full(7, 0.01), unnorm_key="fractal", status="sent", command=np.full(7, 0.01),
                    sent=np.full(7, 0.005), safety=["translation clipped"])
    rec_step = StepRecord.from_action_step(st, frame, TASK, model_trace=[(20, 200), (60, 150)],
                                           depth_codes=[3] * 100, state=[0.0] * 7)
    rec = EpisodeRecorder(tmp_path / "ds", fps=FPS, image_size=(H, W))
    rec.start_episode(TASK)
    rec.add_step(rec_step)
    rec.close()
    with EpisodeReader(tmp_path / "ds") as r:
        f = r.frame(0, 0)
    assert f.sent and np.allclose(f.action, 0.005) and np.allclose(f.model_action, 0.01)
    assert f.intervention and f.mode == "steer_text" and f.safety_clipped and f.step_index == 7
    assert f.camera_timestamp == 12.5 and f.trace == [(20, 200), (99, 99)]


def test_depth_quantizer_matches_lerobot_math():
    q = DepthQuantizer()
    d = np.array([0.0, 0.01, 0.3, 1.0, 5.0, 10.0, 20.0], np.float32)
    codes = q.quantize(d)
    assert codes.dtype == np.uint16 and codes[0] == 0 and codes[1] == 0 and codes[-2] == codes[-1] == 4095
    # lerobot: rint((log(d + shift) - log(min + shift)) / (log(max + shift) - log(min + shift)) * 4095)
    lo, hi = np.log(0.01 + 3.5), np.log(10 + 3.5)
    assert codes[3] == int(np.rint((np.log(1.0 + 3.5) - lo) / (hi - lo) * 4095))
    back = q.dequantize(codes)
    assert back[0] == 0.0 and abs(back[3] - 1.0) <= q.step_at(1.0) / 2 + 1e-6
    assert q.step_at(1.0) < 0.0016                                             # ~1.5 mm codes at 1 m
    lin = DepthQuantizer(depth_min=0.0, depth_max=4.095, use_log=False)
    assert lin.quantize(np.array([1.0], np.float32))[0] == 1000


def test_bad_arguments():
    with pytest.raises(ValueError, match="fps"):
        EpisodeRecorder("/nonexistent/never", fps=2.5)
    with pytest.raises(ValueError, match="camera keys"):
        EpisodeRecorder("/nonexistent/never", fps=2, camera_keys=("a/b",))
    with pytest.raises(ValueError, match="even"):
        EpisodeRecorder("/nonexistent/never", fps=2, image_size=(47, 64))


def test_feature_names_follow_lerobot_rules():
    feats = fm.build_features(["front"], (H, W))
    assert not [k for k in feats if "/" in k]
