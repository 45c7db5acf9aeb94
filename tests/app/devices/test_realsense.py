"""RealSense layer without a camera: recordings written here with ``rs.software_device`` + ``rs.recorder``
play back through the real pipeline path; an unplug is simulated at the pipeline boundary."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from app.devices.camera import Camera, CameraError, CameraStatus, Intrinsics  # noqa: E402
from app.devices.rs_writer import write_recording as write_rs_recording  # noqa: E402
from app.devices.realsense import (  # noqa: E402
    DeviceInfo, FrameTimeout, RealSenseBackend, RealSenseCamera, RealSenseConfig, RecordingCamera,
    list_realsense_devices, main, resume_playback, select_serial)

D435_BAG = Path("/work/shared/data/realsense/single_depth_color_640x480.bag")
W, H, N = 64, 48, 5
SCALE = 0.0001                                  # not the D4xx default 0.001: must come from the file
SERIAL = "123456789"
FX, FY, PPX, PPY = 60.0, 61.0, 31.5, 23.25


# ------------------------------------------------------------------------------ synthetic recording
def synthetic_frames(n: int = N) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random colour + depth per frame (known pixels; incompressible, so any loss shows)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = rng.integers(1, 40000, (H, W), dtype=np.uint16)
        depth[::7, ::5] = 0                     # some invalid pixels
        out.append((rgb, depth))
    return out


def write_recording(path: Path, frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """A D435-like software device (same geometry for both streams), recorded to ``.db3``."""
    write_rs_recording(path, frames, Intrinsics(W, H, FX, FY, PPX, PPY), depth_scale=SCALE, serial=SERIAL)


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames()


@pytest.fixture(scope="module")
def recording(tmp_path_factory, frames) -> Path:
    path = tmp_path_factory.mktemp("rs") / "synthetic.db3"   # 2.59 writes rosbag2 only
    write_recording(path, frames)
    assert path.stat().st_size > 0
    return path


def wait_until(predicate, timeout_s: float, poll=None) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if poll is not None:
            poll()
        if predicate():
            return True
        time.sleep(0.01)
    return False


def read_all(cam, reader=None) -> list:
    out = []
    with pytest.raises(CameraError, match="ended"):
        while len(out) < 100:
            out.append((reader or cam.read)(timeout_s=3.0))
    return out


# ---------------------------------------------------------------------------------- recordings
def test_recording_round_trip_is_bit_exact(recording, frames):
    cam = RecordingCamera(recording, align_to_color=False)
    with cam:
        got = read_all(cam)
        assert cam.status == CameraStatus.ENDED
        assert cam.read_latest() is None
    assert len(got) == N
    for i, (frame, (rgb, depth)) in enumerate(zip(got, frames)):
        assert frame.index == i and frame.serial == SERIAL
        np.testing.assert_array_equal(frame.rgb, rgb)
        np.testing.assert_array_equal(frame.extras["depth_raw"], depth)
        np.testing.assert_array_equal(frame.depth, depth.astype(np.float32) * np.float32(SCALE))
        assert frame.timestamp == pytest.approx(i / 30, abs=1e-6)
    f = got[0]
    assert f.depth_scale == pytest.approx(SCALE, rel=1e-6)
    assert (f.intrinsics.width, f.intrinsics.height) == (W, H)
    assert (f.intrinsics.fx, f.intrinsics.fy, f.intrinsics.cx, f.intrinsics.cy) == \
        pytest.approx((FX, FY, PPX, PPY))
    assert f.intrinsics.model == "brown_conrady"
    assert cam.status == CameraStatus.DISCONNECTED


def test_recording_aligned_keeps_colour_and_metric_depth(recording, frames):
    with RecordingCamera(recording) as cam:
        got = read_all(cam)
    assert len(got) == N
    for frame, (rgb, depth) in zip(got, frames):
        assert frame.extras["aligned"] is True
        np.testing.assert_array_equal(frame.rgb, rgb)
        # identical geometry: align keeps almost every pixel in place; its splatting leaves a few
        # holes and, where two source pixels land on one target, keeps the nearer
        expected = depth.astype(np.float32) * np.float32(SCALE)
        assert (frame.depth == expected).mean() > 0.9
        assert frame.depth.dtype == np.float32 and frame.depth.shape == (H, W)


def test_async_read_and_read_step_through_every_frame(recording, frames):
    with RecordingCamera(recording) as cam:
        first = cam.async_read(timeout_s=3.0)
        assert cam.read_latest() is first          # peeking does not consume
        second = cam.read(timeout_s=3.0)
        rest = read_all(cam, cam.async_read)
    assert [f.index for f in [first, second, *rest]] == list(range(N))


def test_recording_loops(recording, frames):
    with RecordingCamera(recording, loop=True) as cam:
        got = [cam.read(timeout_s=3.0) for _ in range(2 * N + 1)]
        assert cam.status == CameraStatus.STREAMING
    np.testing.assert_array_equal(got[N].rgb, frames[0][0])
    np.testing.assert_array_equal(got[2 * N].rgb, frames[0][0])


def test_realtime_playback_paces_at_recorded_rate(recording, frames):
    t0 = time.monotonic()
    with RecordingCamera(recording, realtime=True) as cam:
        assert wait_until(lambda: cam.status == CameraStatus.ENDED, 5.0, poll=cam.read_latest)
        with pytest.raises(CameraError, match="ended"):
            cam.read(timeout_s=0.5)
    assert time.monotonic() - t0 >= 0.8 * (N - 1) / 30


@pytest.mark.parametrize("content", [None, b"not a recording at all"])
def test_bad_recording_names_the_file(tmp_path, content):
    path = tmp_path / "broken.db3"
    if content is not None:
        path.write_bytes(content)
    cam = RecordingCamera(path)
    with pytest.raises(CameraError, match="broken.db3"):
        cam.connect()
    assert cam.status == CameraStatus.FAILED
    assert cam.read_latest() is None


@pytest.mark.skipif(not D435_BAG.is_file(), reason=f"shared D435 recording absent: {D435_BAG}")
def test_real_d435_bag_plays_aligned_and_metric():
    with RecordingCamera(D435_BAG) as cam:
        got = read_all(cam)
    assert got, "the D435 bag gave no frame"
    f = got[0]
    assert f.rgb.shape == (480, 640, 3) and f.depth.shape == (480, 640)
    assert f.serial == "728612070259"
    assert f.depth_scale == pytest.approx(0.001, rel=1e-6)
    valid = f.depth[f.depth > 0]
    assert (f.depth > 0).mean() > 0.5
    assert 0.2 < float(np.median(valid)) < 10.0 and float(valid.max()) < 65.536
    assert f.depth[240, 320] == pytest.approx(1.563, abs=0.05)      # per the bag's README
    k = f.intrinsics
    assert (k.width, k.height) == (640, 480)
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((613.204, 613.419, 319.939, 239.183), abs=1e-3)


# -------------------------------------------------------------------- live camera, faked at the SDK
class FakeDevice:
    def __init__(self, serial: str) -> None:
        self._info = {rs.camera_info.serial_number: serial, rs.camera_info.name: "Fake D435",
                      rs.camera_info.firmware_version: "5.16.0.1",
                      rs.camera_info.usb_type_descriptor: "3.2"}

    def supports(self, key) -> bool:
        return key in self._info

    def get_info(self, key) -> str:
        return self._info[key]


class FakeRig:
    """Devices a fake context lists, and pipelines that play a real recording until 'unplugged'."""

    def __init__(self, recording: Path | None, serials=(SERIAL,), unplug_mode: str = "raise"):
        self.recording, self.serials, self.unplug_mode = recording, list(serials), unplug_mode
        self.plugged = threading.Event()
        self.plugged.set()
        self.starts = 0

    def backend(self) -> RealSenseBackend:
        return RealSenseBackend(context=lambda: self, pipeline=lambda ctx: FakePipeline(self))

    def query_devices(self) -> list[FakeDevice]:
        return [FakeDevice(s) for s in self.serials] if self.plugged.is_set() else []


class FakePipeline:
    """An endless camera: the synthetic recording, restarted whenever it ends (the SDK's own
    ``repeat_playback`` misorders frames at the wrap and once aborted in ``stop()`` under load)."""

    def __init__(self, rig: FakeRig) -> None:
        self.rig, self._pipe, self._playback = rig, None, None

    def _play(self):
        self._pipe, file_cfg = rs.pipeline(), rs.config()
        file_cfg.enable_device_from_file(str(self.rig.recording), repeat_playback=False)
        self._playback = file_cfg.resolve(rs.pipeline_wrapper(self._pipe)).get_device().as_playback()
        self._playback.set_real_time(False)
        self._playback.pause()                      # until the pipeline listens (as RecordingCamera)
        profile = self._pipe.start(file_cfg)
        resume_playback(self._playback)
        return profile

    def start(self, cfg):
        if not self.rig.plugged.is_set():
            raise RuntimeError("No device connected")
        self.rig.starts += 1
        return self._play()

    def try_wait_for_frames(self, timeout_ms: int):
        if not self.rig.plugged.is_set():
            if self.rig.unplug_mode == "raise":
                raise RuntimeError("Device disconnected. Failed to receive frames")
            time.sleep(timeout_ms / 1000)          # "stall": frames just stop
            return False, None
        ok, fs = self._pipe.try_wait_for_frames(timeout_ms)
        if not ok and self._playback.current_status() == rs.playback_status.stopped:
            self._pipe.stop()
            self._play()
        return ok, fs

    def stop(self) -> None:
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            pipe.stop()


FAST = RealSenseConfig(frame_timeout_s=0.3, retry_min_s=0.05, retry_max_s=0.2)


@pytest.mark.parametrize("unplug_mode", ["raise", "stall"])
def test_unplug_goes_reconnecting_then_streaming(recording, unplug_mode):
    rig = FakeRig(recording, unplug_mode=unplug_mode)
    cam = RealSenseCamera(FAST, backend=rig.backend())
    latest = []
    with cam:
        first = cam.read(timeout_s=3.0)
        assert cam.status == CameraStatus.STREAMING and cam.serial == SERIAL
        assert first.rgb.shape == (H, W, 3) and first.depth_scale == pytest.approx(SCALE, rel=1e-6)
        rig.plugged.clear()
        poll = lambda: latest.append(cam.read_latest())          # the UI: never raises, never blocks
        assert wait_until(lambda: cam.status == CameraStatus.RECONNECTING, 3.0, poll=poll)
        with pytest.raises(FrameTimeout, match="reconnecting"):
            cam.read(timeout_s=0.2)
        time.sleep(0.3)                                          # a few failed polls while away
        assert cam.status == CameraStatus.RECONNECTING
        rig.plugged.set()
        assert wait_until(lambda: cam.status == CameraStatus.STREAMING, 3.0, poll=poll)
        again = cam.read(timeout_s=3.0)
    assert again.index > first.index
    assert rig.starts == 2
    assert any(f is not None for f in latest)
    assert cam.status == CameraStatus.DISCONNECTED


def test_disconnect_while_reconnecting_is_prompt(recording):
    rig = FakeRig(recording)
    cam = RealSenseCamera(FAST, backend=rig.backend())
    cam.connect()
    cam.read(timeout_s=3.0)
    thread = cam._thread
    rig.plugged.clear()
    assert wait_until(lambda: cam.status == CameraStatus.RECONNECTING, 3.0)
    t0 = time.monotonic()
    cam.disconnect()
    assert time.monotonic() - t0 < 1.0
    assert not thread.is_alive()
    assert cam.status == CameraStatus.DISCONNECTED and cam.read_latest() is None


def test_disconnect_stops_streaming_and_step_playback_threads(recording):
    for cam in (RealSenseCamera(FAST, backend=FakeRig(recording).backend()),
                RecordingCamera(recording)):
        cam.connect()
        cam.read(timeout_s=3.0)
        thread = cam._thread
        assert thread.is_alive()
        t0 = time.monotonic()
        cam.disconnect()
        assert time.monotonic() - t0 < 1.0 and not thread.is_alive()
        with pytest.raises(CameraError, match="not connected"):
            cam.read(timeout_s=0.1)
        cam.disconnect()                                         # twice is fine


def test_no_device_fails_fast_naming_the_serial():
    """The real SDK, no camera on this serial: no 15 s pipeline.start() block."""
    cam = RealSenseCamera(RealSenseConfig(serial="000000424242"))
    t0 = time.monotonic()
    with pytest.raises(CameraError, match="000000424242"):
        cam.connect()
    assert time.monotonic() - t0 < 2.0
    assert cam.status == CameraStatus.FAILED


def test_wrong_serial_lists_the_ones_present():
    rig = FakeRig(None, serials=("AAA111", "BBB222"))
    with pytest.raises(CameraError, match="ZZZ999.*AAA111, BBB222"):
        RealSenseCamera(RealSenseConfig(serial="ZZZ999"), backend=rig.backend()).connect()


def test_several_devices_need_a_serial(recording):
    rig = FakeRig(recording, serials=("AAA111", SERIAL))
    with pytest.raises(CameraError, match="several.*AAA111.*serial"):
        RealSenseCamera(FAST, backend=rig.backend()).connect()
    with RealSenseCamera(RealSenseConfig(serial=SERIAL), backend=rig.backend()) as cam:
        assert cam.read(timeout_s=3.0).serial == SERIAL


def test_select_serial_rules():
    devs = [DeviceInfo("A", "D435", "5.16", "3.2")]
    assert select_serial(devs, None) == "A" and select_serial(devs, "A") == "A"
    with pytest.raises(CameraError, match="no RealSense device found"):
        select_serial([], None)
    with pytest.raises(CameraError, match="B.*present: none"):
        select_serial([], "B")


def test_list_devices_and_cli(capsys):
    assert list_realsense_devices(FakeRig(None, serials=("AAA111",))) == \
        [DeviceInfo(serial="AAA111", name="Fake D435", firmware="5.16.0.1", usb_type="3.2")]
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    real = list_realsense_devices()
    assert ("no RealSense device found" in out) if not real else all(d.serial in out for d in real)


def test_cameras_satisfy_the_protocol(recording):
    assert isinstance(RealSenseCamera(), Camera)
    assert isinstance(RecordingCamera(recording), Camera)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        RealSenseConfig(width=0)
    with pytest.raises(ValueError):
        RealSenseConfig(retry_min_s=3.0, retry_max_s=1.0)
