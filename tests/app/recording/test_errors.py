"""Bad input: a read-only or full disk, corrupt or foreign roots, crashes. A clear RecordingError, and nothing
already stored is lost."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

import app.recording.recorder as recorder_mod
import app.recording.store as store
import app.recording.tables as tables
import app.recording.video as video
from app.recording import EpisodeReader, EpisodeRecorder, RecordingError
from tests.app.recording.synth import FPS, H, TASK, W, check_dataset, file_digests, rgb_image, step

N = 5


def new_recorder(root, **kw) -> EpisodeRecorder:
    return EpisodeRecorder(root, fps=FPS, image_size=(H, W), **kw)


def add_episode(rec: EpisodeRecorder, n: int = N) -> None:
    rec.start_episode(TASK)
    for i in range(n):
        rec.add_step(step(rec.episode_index, i))


@pytest.fixture
def one_episode(tmp_path):
    root = tmp_path / "ds"
    rec = new_recorder(root)
    add_episode(rec)
    rec.save_episode()
    return root, rec


def staged_saves(root) -> list:
    return [p for p in (root / ".staging").iterdir() if p.name.startswith("txn-")]


def raise_enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("target", [
    (tables, "write_episodes_grouped"),          # the data file
    (video, "concatenate"),                      # a video file
    (store.Transaction, "write_json"),           # info.json / stats.json
    (store, "fsync_file"),                       # the last step before the commit point
])
def test_disk_full_keeps_every_stored_episode(one_episode, monkeypatch, target):
    root, rec = one_episode
    before = file_digests(root)
    add_episode(rec)
    monkeypatch.setattr(*target, raise_enospc)
    with pytest.raises(RecordingError, match="disk is full") as e:
        rec.save_episode()
    assert "episode 1 was not saved" in str(e.value) and "unchanged" in str(e.value)
    with pytest.raises(RecordingError, match="save it again or discard it"):
        rec.add_step(step(1, N))
    assert file_digests(root) == before                      # not one stored byte changed
    assert staged_saves(root) == []
    assert check_dataset(root)["total_episodes"] == 1
    with EpisodeReader(root) as r:
        assert np.abs(r.frame(0, 4).rgb.astype(int) - rgb_image(0, 4)).mean() < 3.0
    monkeypatch.undo()                                       # space freed: the same episode saves
    assert rec.save_episode().episode_index == 1
    rec.close()
    assert check_dataset(root)["total_frames"] == 2 * N
    with EpisodeReader(root) as r:
        assert np.abs(r.frame(1, 4).rgb.astype(int) - rgb_image(1, 4)).mean() < 3.0


def test_disk_full_while_recording_a_step(tmp_path, monkeypatch):
    rec = new_recorder(tmp_path / "ds")
    add_episode(rec, 2)
    monkeypatch.setattr(video.StreamEncoder, "add", raise_enospc)
    with pytest.raises(RecordingError, match="disk is full"):
        rec.add_step(step(0, 2))
    monkeypatch.undo()
    with pytest.raises(RecordingError, match="discard it"):
        rec.add_step(step(0, 3))
    with pytest.raises(RecordingError, match="discard it"):
        rec.save_episode()
    rec.discard_episode()
    add_episode(rec, 2)
    rec.close()
    assert check_dataset(tmp_path / "ds")["total_frames"] == 2


def _readonly(monkeypatch, root):
    """Every write under ``root`` fails as on a read-only mount (chmod does not stop root, who runs CI)."""
    real_mkdir, real_open = os.mkdir, os.open
    under = str(root)

    def refuse(path):
        if str(path).startswith(under):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def mkdir(path, *a, **k):
        refuse(path)
        return real_mkdir(path, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)


def test_read_only_target_is_refused(tmp_path, monkeypatch):
    _readonly(monkeypatch, tmp_path / "ro")
    with pytest.raises(RecordingError, match="read-only"):
        new_recorder(tmp_path / "ro" / "ds")


def test_read_only_existing_dataset_is_left_alone(one_episode, monkeypatch):
    root, rec = one_episode
    add_episode(rec)
    before = file_digests(root)
    _readonly(monkeypatch, root)
    with pytest.raises(RecordingError, match="read-only"):
        rec.save_episode()
    with pytest.raises(RecordingError, match="read-only"):
        new_recorder(root)                                   # a second session cannot open it for writing
    monkeypatch.undo()
    assert file_digests(root) == before
    with EpisodeReader(root) as r:                           # reading needs no writes
        assert r.num_frames(0) == N


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_by_permissions(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(RecordingError, match="permission denied"):
            new_recorder(ro / "ds")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("content, match", [
    (b"{not json", "unreadable"),
    (b"\xff\xfe\x00garbage", "unreadable"),
    (json.dumps({"codebase_version": "v2.1", "features": {}, "fps": 10}).encode(), "v2.1"),
    (json.dumps([1, 2, 3]).encode(), "not a LeRobot info.json"),
])
def test_corrupt_or_foreign_info_is_refused_untouched(tmp_path, content, match):
    root = tmp_path / "ds"
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_bytes(content)
    before = file_digests(root)
    with pytest.raises(RecordingError, match=match):
        new_recorder(root)
    assert file_digests(root) == before and not (root / ".staging").exists()
    if match != "not a LeRobot info.json":
        with pytest.raises(RecordingError):
            EpisodeReader(root)


def test_a_folder_that_is_not_a_dataset_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(RecordingError, match="not a LeRobot dataset"):
        new_recorder(tmp_path / "photos")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["cat.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecordingError, match="is a file"):
        new_recorder(tmp_path / "file")


def test_different_settings_are_refused(one_episode):
    root, rec = one_episode
    rec.close()
    before = file_digests(root)
    with pytest.raises(RecordingError, match="fps"):
        EpisodeRecorder(root, fps=FPS + 1, image_size=(H, W))
    with pytest.raises(RecordingError, match="different features"):
        EpisodeRecorder(root, fps=FPS, image_size=(H * 2, W))
    with pytest.raises(RecordingError, match="different features"):
        EpisodeRecorder(root, fps=FPS, image_size=(H, W), camera_keys=("front", "wrist"))
    assert file_digests(root) == before


def test_damaged_files_are_reported(one_episode):
    root, rec = one_episode
    rec.close()
    data = root / "data/chunk-000/file-000.parquet"
    good = data.read_bytes()
    data.write_bytes(good[: len(good) // 2])
    with pytest.raises(RecordingError, match="unreadable"):
        new_recorder(root)                                   # refused before anything is appended to it
    with pytest.raises(RecordingError, match="unreadable"):
        EpisodeReader(root).frame(0, 0)
    data.write_bytes(good)
    vid = root / "videos/observation.images.front/chunk-000/file-000.mp4"
    vid.write_bytes(b"\x00" * 1000)
    with EpisodeReader(root) as r:
        with pytest.raises(RecordingError, match="video"):
            r.frame(0, 0)
        assert r.frame(0, 0, images=False).trace                 # the rows are still there


def test_a_second_recorder_on_the_same_root_is_refused(one_episode):
    root, rec = one_episode
    with pytest.raises(RecordingError, match="another recorder"):
        new_recorder(root)
    rec.close()
    new_recorder(root).close()


class Crash(BaseException):
    """A process dying: nothing after it runs (not even except-Exception clauses)."""


def _crash_recorder(rec: EpisodeRecorder) -> None:
    rec._release_lock()                                      # the OS drops a dead process's lock


def test_crash_after_the_commit_point_is_rolled_forward(one_episode, monkeypatch):
    root, rec = one_episode
    add_episode(rec)
    real_apply = store.apply_journal

    def apply_half(root_, txn_dir):
        files = json.loads((txn_dir / store.JOURNAL).read_text())["files"]
        os.replace(txn_dir / "files" / files[0], root_ / files[0])     # one file moved, then the power goes
        raise Crash()

    monkeypatch.setattr(store, "apply_journal", apply_half)
    with pytest.raises(Crash):
        rec.save_episode()
    _crash_recorder(rec)
    monkeypatch.setattr(store, "apply_journal", real_apply)
    assert len(staged_saves(root)) == 1
    rec2 = new_recorder(root)                                # opening finishes the save
    assert rec2.total_episodes == 2 and staged_saves(root) == []
    rec2.close()
    assert check_dataset(root)["total_frames"] == 2 * N


def test_crash_before_the_commit_point_changes_nothing(one_episode, monkeypatch):
    root, rec = one_episode
    add_episode(rec)
    before = file_digests(root)

    def die(*a, **k):
        raise Crash()

    monkeypatch.setattr(store, "write_bytes_atomic", die)   # the journal is never written
    with pytest.raises(Crash):
        rec.save_episode()
    _crash_recorder(rec)
    monkeypatch.undo()
    rec2 = new_recorder(root)                                # drops the half-staged save and the episode buffer
    assert rec2.total_episodes == 1
    assert [p.name for p in (root / ".staging").iterdir()] == ["lock"]
    rec2.close()
    assert file_digests(root) == before


def test_an_encoder_failure_is_a_recording_error(tmp_path):
    rec = new_recorder(tmp_path / "ds")
    rec.start_episode(TASK)
    rec.rgb_encoding = recorder_mod.fm.VideoEncoding(codec="no-such-codec", pix_fmt="yuv420p")
    with pytest.raises(RecordingError, match="no-such-codec"):
        rec.add_step(step(0, 0))
    rec.discard_episode()
    rec.close()


def test_a_failed_save_on_close_keeps_the_recorder_open(one_episode, monkeypatch):
    root, rec = one_episode
    add_episode(rec)
    monkeypatch.setattr(tables, "write_episodes_grouped", raise_enospc)
    with pytest.raises(RecordingError, match="disk is full"):
        rec.close()                                          # Esc with a full disk: told, nothing dropped
    assert rec.recording and rec.num_frames == N
    monkeypatch.undo()
    rec.close()
    assert check_dataset(root)["total_episodes"] == 2


def test_the_reader_refuses_a_dataset_it_cannot_replay(tmp_path):
    root = tmp_path / "other"
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": 30, "features": {
        "action": {"dtype": "float32", "shape": [6], "names": None}}}))
    with pytest.raises(RecordingError, match="not recorded by the station"):
        EpisodeReader(root)
    with pytest.raises(RecordingError, match="no meta/info.json"):
        EpisodeReader(tmp_path / "nothing")


def test_malformed_metadata_is_refused_untouched(one_episode):
    root, rec = one_episode
    rec.close()
    info = json.loads((root / "meta/info.json").read_text())
    info["fps"] = "fast"
    (root / "meta/info.json").write_text(json.dumps(info))
    before = file_digests(root)
    with pytest.raises(RecordingError, match="malformed"):
        new_recorder(root)
    info["fps"] = FPS
    info["total_frames"] = 999                               # disagrees with the episode table
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(RecordingError, match="disagrees"):
        new_recorder(root)
    assert file_digests(root).keys() == before.keys()
