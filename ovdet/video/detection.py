"""Detection on a video: the sampled frames' detections with timestamps, and the drawn video.

The one code path of ``tools/infer.py --input clip.mp4`` and the demo's video tab: frames come
from :class:`~ovdet.video.VideoReader` (sampled at its rate), each is detected, its detections
become ``results.json`` entries (:func:`~ovdet.structures.detections.detection_records`) with the
frame
index and timestamp, and each drawn frame (:func:`~ovdet.utils.visualizer.draw_detections`) goes
into a
:class:`~ovdet.video.VideoWriter`.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ovdet.structures.detections import detection_records
from ovdet.video.io import VideoReader, VideoWriter

__all__ = ["VideoDetections", "detect_video"]

logger = logging.getLogger(__name__)


@dataclass
class VideoDetections:
    """What :func:`detect_video` found, in the ``results.json`` layout of ``tools/infer.py``.

    Attributes:
        detections: one entry per detection (COCO xywh ``bbox``, ``score``, ``category``...),
            with ``frame`` and ``timestamp`` (seconds), and ``novel`` when novel flags were given.
        frames: one entry per sampled frame: ``id``, ``frame``, ``timestamp``, ``width``,
            ``height``.
        video: ``file_name``, ``fps`` (the sampling rate), ``decoded_frames``,
            ``corrupt_frames`` and ``drawn`` (the drawn video's path, or None).
    """

    detections: list[dict]
    frames: list[dict]
    video: dict


def detect_video(
    detector: Any,
    reader: VideoReader,
    file_name: str,
    drawn_path: str | Path | None,
    score_thresh: float | None = None,
    predict_kwargs: Mapping[str, Any] | None = None,
    embeddings: Any = None,
    novel: Sequence[bool] | None = None,
    progress: bool = True,
) -> VideoDetections:
    """Detect the detector's current vocabulary on the sampled frames of a video.

    Args:
        detector: anything with ``predict(images, score_thresh=..., **predict_kwargs)`` returning
            :class:`~ovdet.structures.detections.Detections`, and ``class_names`` (vocabulary set).
        reader: the video, sampled at its rate (``reader.fps``; every frame when None).
        file_name: the video as the results name it.
        drawn_path: where the drawn video goes (at the sampling rate); None draws nothing.
        score_thresh: override of the detector's threshold.
        predict_kwargs: more arguments of ``predict`` (e.g. ``return_embeddings=True``).
        embeddings: an :class:`~ovdet.annotate.datasets.EmbeddingWriter` collecting the region
            embeddings (entries then hold ``embedding_index``).
        novel: per class of the vocabulary, whether it is novel: entries hold ``novel`` and the
            drawing marks novel detections.
        progress: a tqdm bar of the sampled frames.

    Raises:
        ImageError: the video is truncated or damaged (no drawn video is left behind).
    """
    from tqdm import tqdm

    from ovdet.utils.visualizer import draw_detections

    rate = reader.fps or reader.native_fps or 1.0
    writer = VideoWriter(drawn_path, rate) if drawn_path is not None else nullcontext()
    detections, frames = [], []
    bar = tqdm(total=reader.expected_samples(), desc="detect", disable=not progress, unit="frame")
    with writer, bar:
        for frame in reader:
            [det] = detector.predict(
                [frame.image], score_thresh=score_thresh, **dict(predict_kwargs or {})
            )
            image_id = len(frames) + 1
            frames.append(
                {"id": image_id, "frame": frame.index, "timestamp": round(frame.timestamp, 4),
                 "width": frame.image.shape[1], "height": frame.image.shape[0]}
            )  # fmt: skip
            rows = embeddings.add(det.embeddings) if embeddings is not None else None
            flags = [bool(novel[i]) for i in det.labels.tolist()] if novel is not None else None
            records = detection_records(det, file_name, image_id, detector.class_names, rows)
            for i, record in enumerate(records):
                record.update(frame=frame.index, timestamp=round(frame.timestamp, 4))
                if flags is not None:
                    record["novel"] = flags[i]
            detections += records
            if drawn_path is not None:
                drawn = draw_detections(frame.image, det.boxes, det.scores, det.names, novel=flags)
                writer.write(np.asarray(drawn))
            bar.update(1)
    logger.info(
        "%s: %d frame(s) decoded, %d sampled, %d corrupt frame(s) skipped",
        file_name, reader.decoded_frames, len(frames), reader.corrupt_frames,
    )  # fmt: skip
    video = {
        "file_name": file_name,
        "fps": rate,
        "decoded_frames": reader.decoded_frames,
        "corrupt_frames": reader.corrupt_frames,
        "drawn": None if drawn_path is None else str(drawn_path),
    }
    return VideoDetections(detections, frames, video)
