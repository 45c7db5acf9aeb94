"""Intel RealSense cameras, live or recorded, behind the ``Camera`` contract.

Both kinds run the same ``rs.pipeline`` → ``rs.align(color)`` → ``Frame`` path, so a recording
exercises exactly the code a live D4xx does. Depth is converted with the depth scale the device (or
the recording) reports, never an assumed millimetre. A live camera survives being unplugged: its
worker thread reports RECONNECTING and polls for the device with backoff, off the caller's thread.

The device check comes before ``pipeline.start()`` because that call blocks ~15 s when no camera is
there (reference/gui.md §5). ``python -m app.devices.realsense --list`` prints what is connected.
"""
from __future__ import annotations

import argparse
import atexit
import logging
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyrealsense2 as rs

from app.devices.camera import CameraError, CameraStatus, Frame, Intrinsics

log = logging.getLogger(__name__)

POLL_S = 0.1          # worker's wait per try: bounds how long disconnect() waits for it
JOIN_S = 2.0          # disconnect() never waits longer than this for the worker
STALL_FAIL_S = 5.0    # a recording that is not at its end yet gives no frame: broken, say so


class FrameTimeout(CameraError, TimeoutError):
    """No frame within the caller's timeout (stalled, reconnecting): catchable as either base."""


# --------------------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class DeviceInfo:
    serial: str
    name: str
    firmware: str
    usb_type: str


def _info(dev: Any, key: Any) -> str:
    try:
        return str(dev.get_info(key)) if dev.supports(key) else ""
    except RuntimeError:
        return ""


def list_realsense_devices(context: Any | None = None) -> list[DeviceInfo]:
    """Connected RealSense devices (takes ~0.1 s; never starts a stream)."""
    ctx = rs.context() if context is None else context
    return [DeviceInfo(serial=_info(d, rs.camera_info.serial_number),
                       name=_info(d, rs.camera_info.name),
                       firmware=_info(d, rs.camera_info.firmware_version),
                       usb_type=_info(d, rs.camera_info.usb_type_descriptor))
            for d in ctx.query_devices()]


def select_serial(devices: list[DeviceInfo], wanted: str | None) -> str:
    """The serial to open, or a CameraError saying what is there instead."""
    present = [d.serial for d in devices]
    if wanted is not None:
        if wanted in present:
            return wanted
        there = ", ".join(present) if present else "none"
        raise CameraError(f"RealSense {wanted} not found (serials present: {there})")
    if not present:
        raise CameraError("no RealSense device found (is it plugged into a USB 3 port?)")
    if len(present) > 1:
        raise CameraError(f"several RealSense devices found ({', '.join(present)}): "
                          "set RealSenseConfig.serial to choose one")
    return present[0]


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class RealSenseConfig:
    serial: str | None = None        # None: the only device connected
    width: int = 640
    height: int = 480
    fps: int = 30
    align_to_color: bool = True      # False: raw depth geometry (same size as colour required)
    enable_depth: bool = True        # False: Frame.depth is all zeros (invalid)
    frame_timeout_s: float = 2.0     # no frame for this long counts as unplugged
    retry_min_s: float = 0.25        # reconnect backoff: first wait ...
    retry_max_s: float = 2.0         # ... doubling up to this

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.fps) <= 0:
            raise ValueError(f"width, height and fps must be positive, got "
                             f"{self.width}x{self.height}@{self.fps}")
        if not 0 < self.retry_min_s <= self.retry_max_s or self.frame_timeout_s <= 0:
            raise ValueError("need 0 < retry_min_s <= retry_max_s and frame_timeout_s > 0")


@dataclass(frozen=True)
class RealSenseBackend:
    """Where contexts and pipelines come from; tests swap in fakes to unplug at this boundary."""
    context: Callable[[], Any] = rs.context
    pipeline: Callable[[Any], Any] = rs.pipeline


# ---------------------------------------------------------------------------- frames from a pipeline
def _intrinsics(intr: Any) -> Intrinsics:
    return Intrinsics(width=int(intr.width), height=int(intr.height), fx=float(intr.fx),
                      fy=float(intr.fy), cx=float(intr.ppx), cy=float(intr.ppy),
                      model=str(intr.model).split(".")[-1], coeffs=tuple(float(c) for c in intr.coeffs))


def _rgb(color: Any) -> np.ndarray:
    """An owned HxWx3 uint8 RGB copy, whatever 8-bit colour format the stream carries."""
    fmt = color.profile.format()
    data = np.asanyarray(color.get_data())
    if fmt == rs.format.rgb8:
        return data.copy()
    if fmt == rs.format.bgr8:
        return np.ascontiguousarray(data[..., ::-1])
    if fmt == rs.format.rgba8:
        return np.ascontiguousarray(data[..., :3])
    if fmt == rs.format.bgra8:
        return np.ascontiguousarray(data[..., 2::-1])
    if fmt == rs.format.yuyv:
        import cv2   # only for old recordings in YUYV
        return cv2.cvtColor(data.reshape(data.shape[0], -1, 2), cv2.COLOR_YUV2RGB_YUYV)
    raise CameraError(f"unsupported colour format {fmt}")


class _Stream:
    """One started pipeline: turns its framesets into Frames (aligned, metres, colour intrinsics)."""

    def __init__(self, pipeline: Any, profile: Any, serial: str, align: bool, depth: bool,
                 playback: Any | None = None) -> None:
        self.pipeline, self.serial, self.playback = pipeline, serial, playback
        self.depth_enabled = depth
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        self.intrinsics = _intrinsics(color.get_intrinsics())
        self.depth_scale = 0.001
        self.align = rs.align(rs.stream.color) if (depth and align) else None
        if depth:
            self.depth_scale = float(profile.get_device().first_depth_sensor().get_depth_scale())
            d = profile.get_stream(rs.stream.depth).as_video_stream_profile()
            if not align and (d.width(), d.height()) != (color.width(), color.height()):
                _stop_quietly(pipeline)
                raise CameraError(f"depth {d.width()}x{d.height()} differs from colour "
                                  f"{color.width()}x{color.height()}: enable align_to_color")

    def poll(self, timeout_s: float, index: int) -> Frame | None:
        """The next complete frameset as a Frame, or None if none came within the timeout.

        SDK errors (device gone) propagate as RuntimeError for the caller's reconnect logic."""
        ok, fs = self.pipeline.try_wait_for_frames(max(1, int(timeout_s * 1000)))
        if not ok:
            return None
        if self.align is not None:
            fs = self.align.process(fs)
        color = fs.get_color_frame()
        depth = fs.get_depth_frame() if self.depth_enabled else None
        if not color or (self.depth_enabled and not depth):
            return None                       # a partial set (first one after start): skip it
        rgb = _rgb(color)
        extras: dict = {"color_frame_number": int(color.get_frame_number()),
                        "aligned": self.align is not None}
        if depth:
            raw = np.asanyarray(depth.get_data()).copy()
            metres = raw.astype(np.float32) * np.float32(self.depth_scale)
            extras.update(depth_raw=raw, depth_frame_number=int(depth.get_frame_number()))
        else:
            metres = np.zeros(rgb.shape[:2], np.float32)
        return Frame(rgb=rgb, depth=metres, intrinsics=self.intrinsics,
                     timestamp=float(color.get_timestamp()) / 1000.0, serial=self.serial,
                     index=index, depth_scale=self.depth_scale, extras=extras)

    def ended(self) -> bool:
        return self.playback is not None and \
            self.playback.current_status() == rs.playback_status.stopped

    def stop(self) -> None:
        _stop_quietly(self.pipeline)


def _stop_quietly(pipeline: Any) -> None:
    try:
        pipeline.stop()
    except Exception as exc:                  # already stopped, or the device is gone
        log.debug("pipeline.stop(): %s", exc)


# ---------------------------------------------------------------------------------- frame hand-off
class _FrameBuffer:
    """The newest frame, a publish counter and a consume counter, behind one condition."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._published = 0
        self._taken = 0
        self._closed: CameraError | None = None

    def reset(self) -> None:
        with self._cond:
            self._frame, self._published, self._taken, self._closed = None, 0, 0, None

    @property
    def published(self) -> int:
        with self._cond:
            return self._published

    def publish(self, frame: Frame) -> None:
        with self._cond:
            self._frame, self._published = frame, self._published + 1
            self._cond.notify_all()

    def close(self, error: CameraError) -> None:
        with self._cond:
            self._closed = error
            self._cond.notify_all()

    def peek(self) -> Frame | None:
        with self._cond:
            return self._frame

    def take(self, after: int | None, timeout_s: float) -> Frame | None:
        """The newest frame once more than ``after`` (default: the last taken) were published.

        None on timeout; raises the close error when closed with nothing newer to give."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            after = self._taken if after is None else after
            while self._published <= after:
                if self._closed is not None:
                    raise self._closed
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if self._published > after:
                        break
                    return None
            self._taken = self._published
            self._cond.notify_all()
            return self._frame

    def wait_taken(self, stop: threading.Event) -> None:
        """Producer side of step-by-step playback: wait until the last frame was handed out."""
        with self._cond:
            while self._taken < self._published and not stop.is_set():
                self._cond.wait(POLL_S)


# ----------------------------------------------------------------------------- shared camera shell
_CONNECTED: "weakref.WeakSet[_PipelineCamera]" = weakref.WeakSet()


@atexit.register
def _disconnect_all() -> None:
    """A worker still inside the SDK at interpreter exit aborts the process ('terminate called')."""
    for cam in list(_CONNECTED):
        cam.disconnect()


class _Session:
    """One connect()..disconnect(): its stop flag and the stream its worker currently owns."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.stop = threading.Event()


class _PipelineCamera:
    """Status, worker thread and the three reads; subclasses open the stream and run the loop."""

    serial: str

    def __init__(self, serial: str) -> None:
        self.serial = serial
        self._status = CameraStatus.DISCONNECTED
        self._lock = threading.Lock()
        self._buffer = _FrameBuffer()
        self._thread: threading.Thread | None = None
        self._stale: threading.Thread | None = None   # a worker that outlived disconnect()
        self._session: _Session | None = None
        self._fresh_reads = True          # read() waits for a frame newer than the call
        self._count = 0

    # -- status
    @property
    def status(self) -> CameraStatus:
        with self._lock:
            return self._status

    def _set_status(self, status: CameraStatus, session: _Session | None = None) -> None:
        """``session``: set by the worker, ignored once that session was stopped (disconnect wins)."""
        with self._lock:
            if session is not None and session.stop.is_set():
                return
            if self._status != status:
                log.info("camera %s: %s -> %s", self.serial, self._status.value, status.value)
            self._status = status

    # -- lifecycle
    def _open(self) -> _Stream:
        raise NotImplementedError

    def _loop(self, session: _Session) -> None:
        raise NotImplementedError

    def connect(self) -> None:
        """Open the device or file (every error raises here, as CameraError); the worker then sets
        STREAMING on the first frame. Connecting twice is a no-op."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self._stale is not None and self._stale.is_alive():
            raise CameraError(f"camera {self.serial}: the previous stream is still shutting down inside "
                              "the SDK; try again in a moment")
        self._stale = None
        self._set_status(CameraStatus.CONNECTING)
        try:
            stream = self._open()
        except Exception as exc:
            self._set_status(CameraStatus.FAILED)
            self._buffer.close(exc if isinstance(exc, CameraError) else CameraError(str(exc)))
            raise
        self._buffer.reset()
        self._count = 0
        self._session = session = _Session(stream)
        self._thread = threading.Thread(target=self._run, args=(session,), daemon=True,
                                        name=f"camera-{self.serial}")
        self._thread.start()
        _CONNECTED.add(self)

    def _run(self, session: _Session) -> None:
        try:
            self._loop(session)
        except Exception as exc:               # a bug or an SDK surprise: say it, never die silently
            log.exception("camera %s worker failed", self.serial)
            self._set_status(CameraStatus.FAILED, session)
            self._buffer.close(exc if isinstance(exc, CameraError) else
                               CameraError(f"camera {self.serial} failed: {exc}"))
        finally:
            session.stream.stop()

    def disconnect(self) -> None:
        """Stop the worker (it checks every POLL_S) and release the device; safe to call twice."""
        if self._session is not None:
            self._session.stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(JOIN_S)
            if thread.is_alive():
                # Kept so connect() will not open a second stream on the device while this one lives.
                self._stale = thread
                log.warning("camera %s worker still inside the SDK; left to exit alone", self.serial)
        self._buffer.close(CameraError(f"camera {self.serial} is not connected"))
        self._set_status(CameraStatus.DISCONNECTED)
        _CONNECTED.discard(self)

    def __enter__(self) -> "_PipelineCamera":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # -- reads
    def _publish(self, frame: Frame, session: _Session) -> None:
        if session.stop.is_set():
            return
        self._count += 1
        self._buffer.publish(frame)
        self._set_status(CameraStatus.STREAMING, session)

    def _take(self, after: int | None, timeout_s: float) -> Frame:
        if self.status == CameraStatus.DISCONNECTED:
            raise CameraError(f"camera {self.serial} is not connected (call connect())")
        frame = self._buffer.take(after, timeout_s)
        if frame is None:
            raise FrameTimeout(f"no frame from camera {self.serial} within {timeout_s:.2f} s "
                               f"(status: {self.status.value})")
        return frame

    def read(self, timeout_s: float = 1.0) -> Frame:
        """Block for the next frame (one captured after this call; for step playback: the next one)."""
        return self._take(self._buffer.published if self._fresh_reads else None, timeout_s)

    def async_read(self, timeout_s: float = 1.0) -> Frame:
        """The newest frame not yet handed out by read/async_read, waiting if there is none."""
        return self._take(None, timeout_s)

    def read_latest(self) -> Frame | None:
        """Never blocks or raises: the newest frame (possibly stale while reconnecting), else None."""
        if self.status in (CameraStatus.DISCONNECTED, CameraStatus.ENDED, CameraStatus.FAILED):
            return None
        return self._buffer.peek()


def resume_playback(playback: Any) -> None:
    """Resume a paused playback from a helper thread.

    ``resume()`` waits for the SDK's read thread, which in non-real-time mode blocks as soon as
    nobody consumes frames; called on the consumer's own thread it sometimes stalled exactly 10 s
    (the SDK's flush timeout). Off-thread, the worker is already polling when it runs."""
    def run() -> None:
        try:
            playback.resume()
        except RuntimeError as exc:
            log.warning("playback.resume(): %s", exc)
    threading.Thread(target=run, daemon=True, name="rs-playback-resume").start()


# ------------------------------------------------------------------------------------- live camera
class RealSenseCamera(_PipelineCamera):
    """A live RealSense: colour + depth aligned to colour, metric depth, reconnects when unplugged."""

    def __init__(self, config: RealSenseConfig | None = None,
                 backend: RealSenseBackend | None = None) -> None:
        self.config = config or RealSenseConfig()
        self._backend = backend or RealSenseBackend()
        super().__init__(self.config.serial or "")

    def _start_pipeline(self, context: Any, serial: str) -> _Stream:
        c = self.config
        cfg = rs.config()
        cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
        if c.enable_depth:
            cfg.enable_stream(rs.stream.depth, c.width, c.height, rs.format.z16, c.fps)
        pipeline = self._backend.pipeline(context)
        try:
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            raise CameraError(f"could not start RealSense {serial} at {c.width}x{c.height}@{c.fps} "
                              f"(depth {'on' if c.enable_depth else 'off'}): {exc}") from exc
        try:
            return _Stream(pipeline, profile, serial, align=c.align_to_color, depth=c.enable_depth)
        except RuntimeError as exc:
            _stop_quietly(pipeline)
            raise CameraError(f"RealSense {serial} started but its streams are unusable: {exc}") \
                from exc

    def _open(self) -> _Stream:
        context = self._backend.context()
        self.serial = select_serial(list_realsense_devices(context), self.config.serial)
        return self._start_pipeline(context, self.serial)

    def _loop(self, session: _Session) -> None:
        last_frame = time.monotonic()
        while not session.stop.is_set():
            try:
                frame = session.stream.poll(POLL_S, self._count)
            except RuntimeError as exc:
                log.warning("camera %s: %s", self.serial, exc)
                frame = None
                last_frame = -float("inf")      # the SDK says the device is gone: no grace
            if frame is not None:
                last_frame = time.monotonic()
                self._publish(frame, session)
            elif time.monotonic() - last_frame > self.config.frame_timeout_s:
                if not self._reconnect(session):
                    return
                last_frame = time.monotonic()

    def _reconnect(self, session: _Session) -> bool:
        """Poll for the device with backoff until its pipeline starts again; False once stopped."""
        self._set_status(CameraStatus.RECONNECTING, session)
        session.stream.stop()
        delay, stop = self.config.retry_min_s, session.stop
        while not stop.wait(delay):
            delay = min(delay * 2, self.config.retry_max_s)
            try:
                context = self._backend.context()
                if self.serial not in {d.serial for d in list_realsense_devices(context)}:
                    continue
                stream = self._start_pipeline(context, self.serial)
            except (CameraError, RuntimeError) as exc:
                log.info("camera %s: reconnect attempt failed: %s", self.serial, exc)
                continue
            session.stream = stream               # owned by the session: stopped by _run at the end
            if stop.is_set():
                return False
            log.info("camera %s: device is back", self.serial)
            return True
        return False


# -------------------------------------------------------------------------------- recorded camera
class RecordingCamera(_PipelineCamera):
    """Plays a RealSense recording (ROS1 ``.bag`` or 2.59's ``.db3``) through the live code path.

    ``realtime=False`` (default) steps: each recorded frame goes to exactly one read/async_read, in
    order, none dropped (tests, offline processing). ``realtime=True`` paces frames at their
    recorded timestamps like a live camera (UI demos). At the end: status ENDED, reads raise.

    ``loop=True`` restarts a fresh playback at the end instead of the SDK's ``repeat_playback``,
    which under CPU load was seen to pair and order frames wrongly around the wrap.
    """

    def __init__(self, path: str | Path, loop: bool = False, realtime: bool = False,
                 align_to_color: bool = True) -> None:
        self.path = Path(path)
        self.loop, self.realtime, self.align_to_color = loop, realtime, align_to_color
        super().__init__(f"file:{self.path.name}")
        self._fresh_reads = realtime

    def _open(self) -> _Stream:
        if not self.path.is_file():
            raise CameraError(f"RealSense recording {self.path} does not exist")
        pipeline = rs.pipeline()
        cfg = rs.config()
        try:
            cfg.enable_device_from_file(str(self.path), repeat_playback=False)
            cfg.enable_stream(rs.stream.color)
            cfg.enable_stream(rs.stream.depth)
            # Resolve first to get the playback device: not real time (no drops), paused until the
            # pipeline is listening, else the first frames are played into the void.
            device = cfg.resolve(rs.pipeline_wrapper(pipeline)).get_device()
            playback = device.as_playback()
            playback.set_real_time(False)
            playback.pause()
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            raise CameraError(f"cannot play RealSense recording {self.path} (needs colour and "
                              f"depth streams): {exc}") from exc
        self.serial = _info(device, rs.camera_info.serial_number) or self.serial
        try:
            stream = _Stream(pipeline, profile, self.serial, align=self.align_to_color, depth=True,
                             playback=playback)
        except RuntimeError as exc:
            _stop_quietly(pipeline)
            raise CameraError(f"recording {self.path} has unusable streams: {exc}") from exc
        resume_playback(playback)
        return stream

    def _loop(self, session: _Session) -> None:
        stream, stop = session.stream, session.stop
        pace: tuple[float, float] | None = None        # (wall clock, recorded time) at a start
        last_ts = -float("inf")
        last_frame = time.monotonic()
        while not stop.is_set():
            try:
                frame = stream.poll(POLL_S, self._count)
            except RuntimeError as exc:
                raise CameraError(f"playing recording {self.path} failed: {exc}") from exc
            if frame is None:
                if stream.ended() and self.loop:
                    stream.stop()
                    session.stream = stream = self._open()
                    last_frame = time.monotonic()
                    continue
                if stream.ended():
                    self._set_status(CameraStatus.ENDED, session)
                    self._buffer.close(CameraError(
                        f"recording {self.path} ended after {self._count} frames"))
                    return
                if time.monotonic() - last_frame > STALL_FAIL_S:
                    raise CameraError(f"recording {self.path} gave no colour+depth frame for "
                                      f"{STALL_FAIL_S:.0f} s")
                continue
            if self.realtime:
                if pace is None or frame.timestamp < last_ts:   # first frame, or the loop restarted
                    pace = (time.monotonic(), frame.timestamp)
                last_ts = frame.timestamp
                if stop.wait(max(0.0, pace[0] + frame.timestamp - pace[1] - time.monotonic())):
                    return
            self._publish(frame, session)
            if not self.realtime:
                self._buffer.wait_taken(stop)
            last_frame = time.monotonic()


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.devices.realsense",
                                     description="RealSense devices connected to this machine.")
    parser.add_argument("--list", action="store_true", help="list connected devices")
    args = parser.parse_args(argv)
    if not args.list:
        parser.print_help()
        return 0
    devices = list_realsense_devices()
    if not devices:
        print("no RealSense device found")
    for d in devices:
        print(f"{d.serial}  {d.name}  firmware {d.firmware or '?'}  USB {d.usb_type or '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
