"""Video streams through PyAV (FFmpeg): streaming encoders, packet-copy concatenation, frame lookup.

Encoders are fed one frame per step, so an episode is never held in memory. Frames get ``pts = i`` in a
``1/fps`` time base, as lerobot's streaming encoder does, so frame ``i`` of an episode starting at
``from_timestamp`` sits at ``from_timestamp + i / fps`` in the shared file.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .format import VideoEncoding
from .store import RecordingError


def _av():
    try:
        import av
    except ImportError as e:                                        # pragma: no cover - av is a dependency
        raise RecordingError("recording needs PyAV: pip install av") from e
    os.environ.setdefault("SVT_LOG", "1")                           # SVT-AV1's banner, errors only
    return av


def available_encoder(name: str) -> bool:
    av = _av()
    try:
        av.Codec(name, "w")
        return True
    except Exception:                                               # noqa: BLE001 - UnknownCodecError and kin
        return False


class StreamEncoder:
    """One video file being written frame by frame (RGB uint8 HxWx3, or uint16 HxW planes)."""

    def __init__(self, path: Path, fps: int, size: tuple[int, int], enc: VideoEncoding,
                 container_format: str | None = None) -> None:
        av = _av()
        self.path = Path(path)
        self.fps = int(fps)
        self.height, self.width = int(size[0]), int(size[1])
        self.enc = enc
        self.frames = 0
        self._tb = Fraction(1, self.fps)
        try:
            self._out = av.open(str(self.path), "w", format=container_format)
            self._stream = self._out.add_stream(enc.codec, rate=self.fps, options=enc.options())
            self._stream.pix_fmt = enc.pix_fmt
            self._stream.width = self.width
            self._stream.height = self.height
            self._stream.time_base = self._tb
        except Exception as e:
            self._close_quietly()
            raise RecordingError(f"cannot start the {enc.codec} encoder for {self.path.name}: {e}") from e

    def add(self, image: np.ndarray) -> None:
        av = _av()
        if image.dtype == np.uint8:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        else:
            plane = np.ascontiguousarray(image.astype(np.uint16))
            frame = av.VideoFrame.from_ndarray(plane, format=self.enc.pix_fmt)
        frame.pts = self.frames
        frame.time_base = self._tb
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self.frames += 1

    def finish(self) -> Path:
        try:
            for packet in self._stream.encode():
                self._out.mux(packet)
        finally:
            self._out.close()
        return self.path

    def _close_quietly(self) -> None:
        out = getattr(self, "_out", None)
        if out is not None:
            try:
                out.close()
            except Exception:                                       # noqa: BLE001
                pass

    def abort(self) -> None:
        try:                                                # flush: encoders dislike being dropped mid-stream
            for packet in self._stream.encode():
                self._out.mux(packet)
        except Exception:                                           # noqa: BLE001
            pass
        self._close_quietly()
        self.path.unlink(missing_ok=True)


def probe(path: Path) -> dict[str, Any]:
    """lerobot's ``get_video_info`` fields for the first video stream of a file."""
    av = _av()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {
            "video.height": s.height,
            "video.width": s.width,
            "video.codec": s.codec_context.codec.canonical_name,
            "video.pix_fmt": s.pix_fmt,
            "video.fps": int(s.base_rate) if s.base_rate else None,
            "video.channels": len(av.VideoFormat(s.pix_fmt).components),
            "has_audio": bool(c.streams.audio),
        }
    return info


def frame_count(path: Path) -> int:
    """Frames in a file, counted by demuxing (no decoding)."""
    av = _av()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sum(1 for p in c.demux(s) if p.size)


def concatenate(first: Path, second: Path, out: Path, second_offset_s: float) -> None:
    """Packet-copy ``first`` then ``second`` into ``out``; ``second`` starts at ``second_offset_s``.

    Both files come from the same encoder settings, so the first one's codec header serves both (the same
    assumption as lerobot's concat). Nothing is re-encoded."""
    av = _av()
    with av.open(str(first)) as a, av.open(str(out), "w", format="mp4",
                                            options={"movflags": "faststart"}) as o:
        sa = a.streams.video[0]
        ost = o.add_stream_from_template(template=sa, opaque=True)
        ost.time_base = sa.time_base
        for packet in a.demux(sa):
            if packet.dts is None:
                continue
            packet.stream = ost
            o.mux(packet)
        with av.open(str(second)) as b:
            sb = b.streams.video[0]
            offset = round(second_offset_s / sb.time_base)
            for packet in b.demux(sb):
                if packet.dts is None:
                    continue
                packet.pts = packet.pts + offset if packet.pts is not None else None
                packet.dts = packet.dts + offset
                packet.stream = ost
                o.mux(packet)


class FrameDecoder:
    """Frames of one file by time, seeking to the keyframe before and decoding forward.

    Keeps the file open and remembers where it is, so stepping through an episode frame by frame
    decodes each frame once."""

    def __init__(self, path: Path) -> None:
        av = _av()
        self.path = Path(path)
        try:
            self._c = av.open(str(self.path))
            self._s = self._c.streams.video[0]
        except Exception as e:
            raise RecordingError(f"cannot open the video {self.path}: {e}") from e
        self._s.thread_type = "AUTO"
        self._tb = self._s.time_base
        self._iter = None
        self._last: tuple[float, Any] | None = None

    def _restart(self, t: float) -> None:
        self._c.seek(max(0, int(t / self._tb) - 1), stream=self._s, backward=True, any_frame=False)
        self._iter = self._c.decode(self._s)
        self._last = None

    def get(self, t: float, fps: int, fmt: str) -> np.ndarray:
        """The frame whose time is closest to ``t`` (within half a frame), as an array in ``fmt``."""
        half = 0.5 / fps
        last = self._last
        if last is not None and abs(last[0] - t) < half:
            return last[1].to_ndarray(format=fmt)
        if self._iter is None or last is None or last[0] > t or t - last[0] > 8.0 / fps:
            self._restart(t)                         # behind, or far ahead: seek instead of decoding on
        try:
            for frame in self._iter:
                if frame.pts is None:
                    continue
                ft = float(frame.pts * self._tb)
                self._last = (ft, frame)
                if abs(ft - t) < half:
                    return frame.to_ndarray(format=fmt)
                if ft > t + half:
                    break
        except Exception as e:
            self._iter = None
            raise RecordingError(f"cannot decode {self.path} at {t:.3f} s: {e}") from e
        self._iter = None
        raise RecordingError(f"{self.path} has no frame at {t:.3f} s (the file is shorter than its metadata "
                             f"says, or damaged)")

    def close(self) -> None:
        try:
            self._c.close()
        except Exception:                                           # noqa: BLE001
            pass
