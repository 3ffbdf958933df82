"""Video input and output with PyAV: frames sampled at a rate, and a drawn video written.

:class:`VideoReader` decodes a video and yields :class:`VideoFrame` s sampled at ``fps`` (every
frame when ``fps`` is None), each with its timestamp in seconds. A missing, unreadable or
truncated file raises :class:`~ovdet.utils.errors.ImageError` with a one-line message; a frame that
does not decode is skipped and counted in :attr:`VideoReader.corrupt_frames`.
:class:`VideoWriter` encodes RGB frames into a video, atomically (a temporary file renamed on
success).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ovdet.utils.errors import ImageError

__all__ = ["VIDEO_EXTENSIONS", "VideoFrame", "VideoReader", "VideoWriter", "is_video"]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video file by its extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoFrame:
    """One decoded frame.

    Attributes:
        index: position among the decoded frames (0-based, before sampling).
        timestamp: presentation time in seconds.
        image: RGB uint8 [H, W, 3].
    """

    index: int
    timestamp: float
    image: np.ndarray


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a dependency
        raise ImageError(f"video input needs PyAV (pip install av): {e}") from None
    return av


class VideoReader:
    """Frames of a video, sampled at ``fps``.

    Args:
        path: the video file.
        fps: frames per second to keep (a frame is kept when it reaches the next sampling time);
            None keeps every frame.

    Raises:
        ImageError: the file is missing, not a video, has no video stream, or is truncated.
    """

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        av = _av()
        self.path = Path(path)
        if fps is not None and not (math.isfinite(fps) and fps > 0):  # nan and inf too
            raise ImageError(f"the sampling rate must be a positive number, got {fps}")
        self.fps = fps
        if not self.path.is_file():
            raise ImageError(f"video {self.path} does not exist")
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as e:
            raise ImageError(
                f"video {self.path} cannot be read (truncated or not a video): {e}"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise ImageError(f"{self.path} has no video stream")
        self._stream = self._container.streams.video[0]
        self.corrupt_frames = 0
        self.decoded_frames = 0
        # Read while the container is open (iterating closes it; PyAV >= 18.1.1 then refuses
        # to read a stream's properties).
        s = self._stream
        self.duration: float | None = None
        """Length in seconds, if the container says."""
        if s.duration is not None and s.time_base is not None:
            self.duration = float(s.duration * s.time_base)
        elif self._container.duration is not None:
            self.duration = self._container.duration / 1_000_000
        rate = s.average_rate or s.guessed_rate
        self.native_fps: float | None = float(rate) if rate else None
        """The stream's frame rate, if known."""
        self._stream_frames = s.frames

    def expected_samples(self) -> int | None:
        """How many frames sampling should give (for a progress bar), if known."""
        duration = self.duration
        rate = self.fps or self.native_fps
        if duration is None or not rate:
            return self._stream_frames or None
        return max(1, int(np.ceil(duration * rate - 1e-6)))

    def __iter__(self) -> Iterator[VideoFrame]:
        av = _av()
        next_time = 0.0
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    self.corrupt_frames += 1
                    logger.warning("skipping a corrupt frame of %s: %s", self.path, e)
                    continue
                for frame in frames:
                    index = self.decoded_frames
                    self.decoded_frames += 1
                    t = (
                        float(frame.time)
                        if frame.time is not None
                        else index / (self.native_fps or 1.0)
                    )
                    if self.fps is not None:
                        if t + 1e-6 < next_time:
                            continue
                        next_time = (np.floor(t * self.fps + 1e-6) + 1) / self.fps
                    yield VideoFrame(index, t, frame.to_ndarray(format="rgb24"))
        except av.FFmpegError as e:
            raise ImageError(f"video {self.path} is truncated or damaged: {e}") from None
        finally:
            self._container.close()
        if self.decoded_frames == 0:
            raise ImageError(f"video {self.path} has no decodable frame")


class VideoWriter:
    """Encodes RGB frames into a video file, atomically.

    Use as a context manager; the file appears at ``path`` only when the block ends without an
    exception.

    Args:
        path: the output video (``.mp4``: H.264 when available, else MPEG-4 part 2).
        fps: frame rate.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self._container = None
        self._stream = None
        self._tmp: str | None = None
        self.frames = 0

    def __enter__(self) -> VideoWriter:
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(
            prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent
        )
        os.close(fd)
        self._container = av.open(self._tmp, mode="w")
        return self

    def write(self, image: np.ndarray) -> None:
        """Append one RGB uint8 frame [H, W, 3] (the first frame fixes the size)."""
        from fractions import Fraction

        av = _av()
        if self._stream is None:
            rate = Fraction(self.fps).limit_denominator(1000)
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=rate)
            h, w = image.shape[:2]
            self._stream.width, self._stream.height = w - w % 2, h - h % 2
            self._stream.pix_fmt = "yuv420p"
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(self._tmp)
