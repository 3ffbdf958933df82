"""One request of the video tab, without the page: sample, detect, draw, tabulate."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovdet.demo.classes import vocabulary_or_message
from ovdet.demo.model_cache import DemoModel
from ovdet.demo.results import box_text, category_records, upload_message
from ovdet.utils.errors import OvdetError

__all__ = ["VIDEO_TABLE_HEADERS", "DemoVideoResult", "detect_video_file"]

logger = logging.getLogger("ovdet.demo")

VIDEO_TABLE_HEADERS = ["time (s)", "frame", "class", "score", "box (x1, y1, x2, y2)",
                       "base / novel"]  # fmt: skip


@dataclass
class DemoVideoResult:
    """What one request of the video tab shows.

    Attributes:
        drawn: the drawn video (mp4 at the sampling rate), or None.
        rows: the detections table, one row per detection (:data:`VIDEO_TABLE_HEADERS`).
        results: the results JSON (``tools/infer.py``'s for a video, plus ``novel``).
        messages: one line per problem (``error: ...``, ``warning: ...``), as the command line
            prints them.
    """

    drawn: Path | None = None
    rows: list[list[Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """One line per problem, then a summary line when the video was processed."""
        if not self.results:
            return "\n".join(self.messages)
        video = self.results["video"]
        summary = (
            f"{len(self.rows)} detection(s) in {len(self.results['images'])} frame(s) of "
            f"{video['file_name']} (sampled at {video['fps']:g} fps)"
        )
        return "\n".join([*self.messages, summary])


def detect_video_file(
    model: DemoModel,
    video: str | Path | None,
    class_text: str,
    templates: str,
    score_thresh: float,
    clip_rescoring: bool,
    fps: float,
    out_dir: str | Path,
    max_frames: int = 300,
    progress: bool = False,
) -> DemoVideoResult:
    """One request of the video tab, without the page: sample, detect, draw, tabulate.

    The frames are sampled, detected and drawn by :func:`~ovdet.video.detection.detect_video`,
    the code path of ``tools/infer.py --input clip.mp4``. Bad input never raises: a bad
    vocabulary, a missing, unreadable or truncated video, or one giving more than
    ``max_frames`` samples is a message of the result; corrupt frames are skipped and counted.

    Args:
        model: the served checkpoint.
        video: the uploaded file.
        class_text: the class box (see :func:`~ovdet.demo.classes.parse_class_box`).
        templates: one of ``model.template_choices``.
        score_thresh: detections scoring below it are dropped.
        clip_rescoring: combine the detector's scores with CLIP's scores of the box crops.
        fps: frames per second to detect on; 0 keeps every frame.
        out_dir: where the drawn video is written (``<video stem>_det.mp4``).
        max_frames: most sampled frames; a longer video is refused with a message.
        progress: a tqdm progress bar in the server's console.
    """
    from ovdet.video.detection import detect_video
    from ovdet.video.io import VideoReader

    result = DemoVideoResult()
    vocabulary = vocabulary_or_message(class_text, result.messages)
    if vocabulary is None:
        return result
    if not video:
        result.messages.append("error: no video; upload one")
        return result
    if fps < 0:
        result.messages.append(f"error: the frame rate must be 0 (every frame) or more, got {fps}")
        return result
    path = Path(video)
    drawn = Path(out_dir) / f"{path.stem}_det.mp4"
    try:
        reader = VideoReader(path, fps or None)
        expected = reader.expected_samples()
        if expected is not None and expected > max_frames:
            result.messages.append(
                f"error: {path.name} gives {expected} frames "
                f"{'(every frame)' if not fps else f'at {fps:g} fps'}; at most {max_frames} per "
                "request (lower the frame rate)"
            )
            return result
        with model.prepared(vocabulary, templates, clip_rescoring) as (detector, is_novel):
            found = detect_video(
                detector, reader, path.name, drawn, score_thresh=score_thresh, novel=is_novel,
                progress=progress,
            )  # fmt: skip
    except (OvdetError, OSError) as e:  # ImageError: a missing, unreadable or truncated video
        result.messages.append(upload_message(e, path))
        return result
    result.drawn = drawn
    result.results = {
        "categories": category_records(vocabulary, is_novel),
        "images": found.frames,
        "detections": found.detections,
        "video": {**found.video, "drawn": drawn.name},
    }
    for record in found.detections:
        result.rows.append(
            [record["timestamp"], record["frame"], record["category"], round(record["score"], 3),
             box_text(record["bbox"]), "novel" if record["novel"] else "base"]
        )  # fmt: skip
    if found.video["corrupt_frames"]:
        result.messages.append(f"warning: {found.video['corrupt_frames']} corrupt frame(s) skipped")
    logger.info("%s", result.status.replace("\n", "; "))
    return result
