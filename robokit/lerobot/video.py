"""MP4 files of a LeRobot dataset, written and read with PyAV.

LeRobot decodes its videos with torchcodec or PyAV and writes AV1 (libsvtav1, yuv420p, a keyframe
every 2 frames, CRF 30) by default; :class:`VideoWriter` writes the same when PyAV's FFmpeg has
libsvtav1 and H.264 (yuv420p) otherwise. Frame ``k`` of a file is at ``k / fps`` seconds, so an
episode that starts at frame ``k0`` of a file has ``from_timestamp = k0 / fps``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from robokit.errors import DataError
from robokit.lerobot.layout import require

#: Codecs to use, best first: LeRobot's default, then the one every decoder has.
CODEC_PREFERENCE = ("libsvtav1", "libx264", "h264")
DEFAULT_CRF = 30
DEFAULT_GOP = 2


def pick_codec(wanted: str = "auto") -> str:
    """The encoder to use: ``wanted`` if PyAV's FFmpeg has it ("av1" means libsvtav1), else the first
    available of :data:`CODEC_PREFERENCE`."""
    av = require("av")
    available = set(av.codecs_available)
    if wanted != "auto":
        name = {"av1": "libsvtav1", "h264": "libx264"}.get(wanted, wanted)
        if name not in available and wanted not in available:
            raise DataError(f"video codec {wanted!r} is not in this PyAV build; use auto, av1 or h264")
        return name if name in available else wanted
    for name in CODEC_PREFERENCE:
        if name in available:
            return name
    raise DataError("this PyAV build has neither libsvtav1 nor an H.264 encoder; reinstall PyAV")


class VideoWriter:
    """One MP4 file of one camera: frames appended in order, ``frames_written`` of them so far.

    ``threads`` is the encoder's thread count (None: the codec decides).
    """

    def __init__(self, path: Path, fps: int, height: int, width: int, codec: str, crf: int = DEFAULT_CRF,
                 gop: int = DEFAULT_GOP, threads: int | None = None) -> None:
        av = require("av")
        # SVT-AV1 prints a banner and tuning warnings to stderr unless told to report errors only.
        os.environ.setdefault("SVT_LOG", "1")
        self.path, self.fps, self.codec = path, int(fps), codec
        self.options = {"g": str(gop), "crf": str(crf)}
        if codec == "libsvtav1":
            self.options["preset"] = "12"
            if threads:
                self.options["svtav1-params"] = f"lp={threads}"
        else:
            self.options["preset"] = "veryfast"
            if threads:
                self.options["threads"] = str(threads)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w")
        try:
            self._stream = self._container.add_stream(codec, rate=self.fps, options=self.options)
            self._stream.pix_fmt = "yuv420p"
            self._stream.width, self._stream.height = int(width), int(height)
            self._time_base = Fraction(1, self.fps)
            self._stream.time_base = self._time_base
        except Exception:
            self._container.close()
            raise
        self._av = av
        self.frames_written = 0
        self.crf, self.gop = crf, gop

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames (N, H, W, 3)."""
        for image in frames:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            # The muxer replaces the stream's time base once it starts: frames count in 1/fps steps.
            frame.time_base = self._time_base
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def size_bytes(self) -> int:
        """Bytes on disk so far (the muxer writes as it goes)."""
        return self.path.stat().st_size if self.path.exists() else 0


def video_info(path: Path, crf: int, gop: int) -> dict[str, Any]:
    """The ``info`` block of a video feature in ``meta/info.json``, probed from the written file as
    LeRobot does."""
    av = require("av")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info: dict[str, Any] = {
            "video.height": stream.height, "video.width": stream.width,
            "video.codec": stream.codec.canonical_name, "video.pix_fmt": stream.pix_fmt,
            "video.fps": int(stream.base_rate) if stream.base_rate else None,
            "video.channels": 3, "has_audio": False,
        }
    info.update({"video.g": gop, "video.crf": crf, "is_depth_map": False})
    return info


class VideoCursor:
    """Reads one MP4 file front to back, handing out the frames of consecutive time ranges.

    LeRobot puts episodes back to back in a file; :meth:`take` returns the frames whose time lies in
    ``[start, start + n / fps)``, so an importer walking the episodes in file order decodes every
    frame once.
    """

    def __init__(self, path: Path, fps: float) -> None:
        av = require("av")
        if not path.is_file():
            raise DataError(f"{path}: video file missing")
        self.path, self.fps = path, float(fps)
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as exc:
            raise DataError(f"{path}: not a readable video ({exc})") from None
        self._frames = self._decode()
        self._pending: tuple[float, np.ndarray] | None = None

    def _decode(self) -> Iterator[tuple[float, np.ndarray]]:
        base = self._stream.time_base
        for frame in self._container.decode(self._stream):
            if frame.pts is None:
                continue
            yield float(frame.pts * base), frame.to_ndarray(format="rgb24")

    def take(self, start: float, count: int) -> np.ndarray:
        """``count`` frames from time ``start`` on, uint8 (count, H, W, 3); DataError if the file has
        fewer or they are not where the metadata says."""
        half = 0.5 / self.fps
        out: list[np.ndarray] = []
        while len(out) < count:
            item = self._pending or next(self._frames, None)
            self._pending = None
            if item is None:
                raise DataError(f"{self.path}: ends after {len(out)} of the {count} frames expected from "
                                f"{start:.3f} s")
            ts, image = item
            expected = start + len(out) / self.fps
            if ts < expected - half:
                continue  # a frame of an earlier range not asked for
            if ts > expected + half:
                raise DataError(f"{self.path}: no frame at {expected:.3f} s (next one at {ts:.3f} s)")
            out.append(image)
        return np.stack(out)

    def close(self) -> None:
        """Close the file."""
        self._container.close()
