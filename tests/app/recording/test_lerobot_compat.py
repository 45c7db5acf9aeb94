"""lerobot's own loader reads what the recorder writes (runs only where lerobot is importable).

lerobot is not a dependency of the station: its current release needs Python >= 3.12 and torch < 2.12,
the station runs on Python 3.11 with torch 2.13. This test was run in a scratch environment (lerobot's
source at 7427f31 on Python 3.11, datasets 4.8.5, pandas 2.3.3, the station's torch and PyAV); here it
skips itself.
"""
from __future__ import annotations

import numpy as np
import pytest

from app.recording import DepthQuantizer, EpisodeReader
from tests.app.recording.synth import FPS, TASK, depth_image
from tests.app.recording.test_recorder import N, record

lerobot_dataset = pytest.importorskip(
    "lerobot.datasets.lerobot_dataset",
    reason="lerobot is not installed (it needs Python >= 3.12 and torch < 2.12; the station pins 3.11 / 2.13)")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot") / "ds"
    record(root)
    return root


def test_lerobot_dataset_loads_the_recording(dataset):
    ds = lerobot_dataset.LeRobotDataset(repo_id="local/station_test", root=dataset, video_backend="pyav")
    assert len(ds) == 2 * N and ds.num_episodes == 2 and ds.fps == FPS
    assert ds.meta.depth_keys == ["observation.images.front_depth"]
    assert ds.meta.video_keys == ["observation.images.front", "observation.images.front_depth"]
    q = DepthQuantizer()
    with EpisodeReader(dataset) as r:
        for idx in (0, 3, N - 1, N, 2 * N - 1):                # both episodes, both ends of the shared files
            item = ds[idx]
            e, i = int(item["episode_index"]), int(item["frame_index"])
            ours = r.frame(e, i)
            rgb = item["observation.images.front"]
            assert tuple(rgb.shape) == (3, ours.rgb.shape[0], ours.rgb.shape[1])
            assert np.abs(rgb.permute(1, 2, 0).numpy() * 255 - ours.rgb).max() <= 1.0   # the same decoded frame
            depth_mm = item["observation.images.front_depth"][0].numpy()
            truth = depth_image(e, i)
            valid = truth > 0
            tol_mm = np.array([q.step_at(float(d)) / 2 for d in truth[valid]]) * 1000 + 0.6
            assert np.all(np.abs(depth_mm[valid] - truth[valid] * 1000) <= tol_mm)
            assert np.all(depth_mm[~valid] == 10.0)                   # lerobot reads code 0 as depth_min
            np.testing.assert_array_equal(item["action"].numpy(), ours.action)
            np.testing.assert_array_equal(item["molmoact.trace"].numpy()[: len(ours.trace)], np.array(ours.trace))
            assert item["task"] == ours.instruction and item["task"] in (TASK, "lift it")
            assert item["safety.reasons"] == "; ".join(ours.safety_reasons)
            assert float(item["timestamp"]) == pytest.approx(i / FPS)
    assert set(ds.meta.stats) >= {"action", "observation.state", "observation.images.front"}


def test_lerobot_reads_across_files_and_chunks(tmp_path):
    """Tiny size caps: every episode in its own data/video/episode files, two files per chunk."""
    root = tmp_path / "ds"
    record(root, episodes=3, n=4, discard_between=False, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6,
           chunks_size=2)
    ds = lerobot_dataset.LeRobotDataset(repo_id="local/station_rolled", root=root, video_backend="pyav")
    assert len(ds) == 12 and ds.num_episodes == 3
    with EpisodeReader(root) as r:
        for idx in (0, 4, 11):
            item = ds[idx]
            ours = r.frame(int(item["episode_index"]), int(item["frame_index"]))
            assert np.abs(item["observation.images.front"].permute(1, 2, 0).numpy() * 255 - ours.rgb).max() <= 1.0
