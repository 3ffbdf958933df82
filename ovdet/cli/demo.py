"""``tools/demo.py``: a web demo (Gradio) of a checkpoint: drop pictures, type names, look.

Serves one page on http://127.0.0.1:7860 (``--host``/``--port`` to change): upload one or more
images or pick an example, type class names, choose the prompt templates, the score threshold and
the ViLD-ensemble; see the drawn images (novel classes marked ``*``), a table of detections and
the results JSON (the format of ``tools/infer.py``) to download. A video tab does the same for a
video sampled at a frame rate (as ``tools/infer.py --input clip.mp4 --fps``): the drawn video,
the detections of each sampled frame with its time, the results JSON. Bad input (a file that is
not an image or not a whole video, an empty or duplicated vocabulary) shows the command line's
one-line message in the page; the app keeps serving. ``--search-index`` (an index of
``tools/search.py index``) adds a text-search tab: the top hits of a query as a contact sheet and
a table.

Examples::

    make demo                # trains output/synthetic_benchmark/vild/model_final.pt, then:
    python tools/demo.py     # serves it, with the benchmark's 64 classes and held-out images
    python tools/demo.py --checkpoint output/model_final.pt --classes "kite,umbrella" \\
        --examples photos/ --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import argparse
import atexit
import logging
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ovdet.cli.common import add_common_arguments, cli_entry, setup_logging
from ovdet.utils.errors import CheckpointError, ConfigError, ImageError, OvdetError, VocabularyError

if TYPE_CHECKING:
    from PIL import Image

    from ovdet.api import Detections, OVDetector
    from ovdet.clip.text_classifier import Vocabulary

__all__ = [
    "DEFAULT_CHECKPOINT",
    "DemoModel",
    "DemoResult",
    "DemoVideoResult",
    "build_app",
    "build_parser",
    "detect_files",
    "detect_video_file",
    "main",
    "parse_class_box",
    "search_index",
]

logger = logging.getLogger("ovdet.demo")

DEFAULT_CHECKPOINT = "output/synthetic_benchmark/vild/model_final.pt"
MAKE_DEFAULT_CHECKPOINT = "make demo (or: python tools/benchmark_synthetic.py --small)"
DISPLAY_MIN_SIDE = 512  # smaller pictures are drawn enlarged (see _display_view)
TABLE_HEADERS = ["image", "class", "score", "box (x1, y1, x2, y2)", "base / novel"]
VIDEO_TABLE_HEADERS = ["time (s)", "frame", "class", "score", "box (x1, y1, x2, y2)",
                       "base / novel"]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="A web demo (Gradio) of an open-vocabulary detector checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help=f"checkpoint written by tools/train.py (default: {DEFAULT_CHECKPOINT}, the one "
        "`make demo` trains)",
    )
    p.add_argument(
        "--classes",
        default=None,
        help='initial vocabulary in the page: "kite,umbrella", a text file (one class per line, '
        "synonyms after commas) or a COCO JSON (default: for the synthetic benchmark's "
        "checkpoint, its 64 classes; else the checkpoint's training classes)",
    )
    p.add_argument(
        "--examples",
        default=None,
        help="example images offered in the page: a folder or a glob pattern (default: the "
        "synthetic benchmark's held-out images, when serving its checkpoint)",
    )
    p.add_argument(
        "--search-index",
        default=None,
        help="an index written by tools/search.py index: adds a text-search tab (default: none)",
    )
    p.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="initial score threshold (default: the model's MODEL.ROI_HEADS.SCORE_THRESH_TEST)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument(
        "--clip",
        default=None,
        help="CLIP spec replacing the checkpoint's, e.g. ViT-B-32:/path/weights.pt",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default: 7860)")
    p.add_argument(
        "--max-images", type=int, default=16, help="most images per request (default: 16)"
    )
    p.add_argument(
        "--max-video-frames",
        type=int,
        default=300,
        help="most sampled frames per video request; a longer video is refused with a message "
        "(lower the frame rate) (default: 300)",
    )
    add_common_arguments(p)
    return p


def parse_class_box(text: str) -> Vocabulary:
    """The vocabulary typed in the page, in the formats ``tools/infer.py --classes`` takes.

    One line: comma-separated class names (as ``--classes "kite,umbrella"``). Several lines: one
    class per line, synonyms after commas, ``#`` comments (as a ``--classes`` text file). Never
    read as a path: the page cannot make the server open its files.

    Raises:
        VocabularyError: an empty vocabulary, or an empty or duplicated name.
    """
    from ovdet.clip.text_classifier import Vocabulary

    if "\n" not in text.strip():
        return Vocabulary.from_string(text)
    with tempfile.TemporaryDirectory(prefix="ovdet-demo-") as tmp:
        path = Path(tmp) / "classes.txt"
        path.write_text(text, encoding="utf-8")
        try:
            return Vocabulary.from_file(path)
        except VocabularyError as e:  # the message names the class box, not a temporary file
            raise VocabularyError(str(e).replace(f"vocabulary file {path}", "the class list")
                                  .replace(str(path), "the class list")) from None  # fmt: skip


def _vocabulary_or_message(class_text: str | None, messages: list[str]) -> Vocabulary | None:
    """:func:`parse_class_box` of the page's class box; on a bad vocabulary, its one-line
    message appended to ``messages`` and ``None``."""
    try:
        return parse_class_box(class_text or "")
    except VocabularyError as e:
        messages.append(f"error: {e}")
        return None


def format_vocabulary(vocabulary: Vocabulary) -> str:
    """The inverse of :func:`parse_class_box`: one line, or one class per line with synonyms."""
    if not any(vocabulary.synonyms):
        return ", ".join(vocabulary.names)
    return "\n".join(", ".join((n, *s)) for n, s in zip(vocabulary.names, vocabulary.synonyms))


class DemoModel:
    """A checkpoint served to many requests: one model, one text classifier per template set.

    The template sets share the model (and its head): a request sets the vocabulary again when
    it differs from the last one (templates or names). Requests run one at a time.

    Args:
        detector: the loaded detector; its config's ``MODEL.OVDET.TEMPLATES`` is the default set.
    """

    def __init__(self, detector: OVDetector) -> None:
        self.default_templates = str(detector.cfg.MODEL.OVDET.TEMPLATES)
        self._detectors = {self.default_templates: detector}
        self._current: tuple[str, Any] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", clip: str | None = None):
        from ovdet.api import OVDetector

        return cls(OVDetector.from_checkpoint(path, device=device, clip=clip))

    @property
    def detector(self) -> OVDetector:
        """The detector of the default template set."""
        return self._detectors[self.default_templates]

    @property
    def template_choices(self) -> list[str]:
        """The template sets offered: the checkpoint's, then the named sets."""
        from ovdet.clip.text_classifier import TEMPLATE_SETS

        return list(dict.fromkeys([self.default_templates, *TEMPLATE_SETS]))

    @property
    def default_score_thresh(self) -> float:
        return float(self.detector.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)

    @property
    def max_load_pixels(self) -> int:
        return int(self.detector.cfg.INPUT.MAX_LOAD_PIXELS)

    def _detector_for(self, templates: str) -> OVDetector:
        if templates not in self.template_choices:
            raise VocabularyError(
                f"templates {templates!r} are not one of {', '.join(self.template_choices)}"
            )
        if templates not in self._detectors:
            from ovdet.api import OVDetector

            base = self.detector
            cfg = base.cfg.clone()
            cfg.defrost()
            cfg.MODEL.OVDET.TEMPLATES = templates
            cfg.freeze()
            self._detectors[templates] = OVDetector(
                base.model, cfg, base.train_class_names, base.device
            )
        return self._detectors[templates]

    def detect(
        self,
        images: Sequence[np.ndarray],
        vocabulary: Vocabulary,
        templates: str,
        score_thresh: float,
        ensemble: bool,
    ) -> tuple[list[Detections], list[bool]]:
        """Detect ``vocabulary`` in RGB uint8 images [H, W, 3].

        Returns:
            One :class:`~ovdet.api.Detections` per image, and per class of the vocabulary
            whether it is novel (outside the training vocabulary, the head's rule).
        """
        with self.prepared(vocabulary, templates, ensemble) as (detector, is_novel):
            results = detector.predict(list(images), score_thresh=score_thresh)
        return results, is_novel

    @contextmanager
    def prepared(
        self, vocabulary: Vocabulary, templates: str, ensemble: bool
    ) -> Iterator[tuple[OVDetector, list[bool]]]:
        """Hold the model for one request with its vocabulary, templates and ensemble set.

        Yields:
            (the detector, per class of the vocabulary whether it is novel: outside the
            training vocabulary, the head's rule).
        """
        with self._lock:
            detector = self._detector_for(templates)
            if self._current != (templates, vocabulary):
                detector.class_names = []  # the head is shared by the template sets: set it
                detector.set_classes(vocabulary)
                self._current = (templates, vocabulary)
            detector.enable_clip_rescoring(ensemble)
            yield detector, detector.head.get_vocabulary()[1].tolist()


@dataclass
class DemoResult:
    """What one request shows.

    Attributes:
        drawn: per readable image, (drawn picture, its file name).
        rows: the detections table, one row per detection (:data:`TABLE_HEADERS`).
        results: the results JSON (``tools/infer.py``'s format, plus ``novel`` per detection).
        messages: one line per problem (``error: ...``), as the command line prints them.
    """

    drawn: list[tuple[Image.Image, str]] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """One line per problem, then a summary line."""
        summary = f"{len(self.rows)} detection(s) in {len(self.drawn)} image(s)"
        return "\n".join([*self.messages, summary] if self.drawn else self.messages or [summary])


def _upload_message(error: Exception, path: Path) -> str:
    """The one-line message of a failed upload, naming the file as the user knows it (not the
    server's copy)."""
    return f"error: {error}".replace(str(path), path.name)


def _categories(vocabulary: Vocabulary, is_novel: Sequence[bool]) -> list[dict]:
    """The results' ``categories``: id, name and whether the class is novel."""
    return [
        {"id": i + 1, "name": n, "novel": bool(is_novel[i])} for i, n in enumerate(vocabulary.names)
    ]


def _box_text(bbox: Sequence[float]) -> str:
    """A results entry's COCO ``[x, y, w, h]`` as the table's ``x1, y1, x2, y2``."""
    x, y, w, h = bbox
    return f"{round(x, 1)}, {round(y, 1)}, {round(x + w, 1)}, {round(y + h, 1)}"


def _display_view(array: np.ndarray, min_side: int = DISPLAY_MIN_SIDE) -> tuple[np.ndarray, int]:
    """A small picture enlarged by a whole factor (nearest pixel) for drawing, so that its labels
    stay small beside its objects; returns (picture [H * s, W * s, 3], s)."""
    from PIL import Image

    scale = max(1, min_side // max(array.shape[:2]))
    if scale == 1:
        return array, 1
    height, width = array.shape[:2]
    view = Image.fromarray(array).resize((width * scale, height * scale), Image.NEAREST)
    return np.asarray(view), scale


def detect_files(
    model: DemoModel,
    files: Sequence[str | Path],
    class_text: str,
    templates: str,
    score_thresh: float,
    ensemble: bool,
    max_images: int = 16,
    progress: bool = False,
) -> DemoResult:
    """One request of the page, without the page: read, detect, draw, tabulate.

    Bad input never raises: it becomes a message of the result (a bad vocabulary stops the
    request; an unreadable file is skipped, the others are processed, as ``tools/infer.py``).
    """
    from tqdm import tqdm

    from ovdet.utils.visualizer import draw_detections

    result = DemoResult()
    vocabulary = _vocabulary_or_message(class_text, result.messages)
    if vocabulary is None:
        return result
    files = [Path(f) for f in files or []]
    if not files:
        result.messages.append("error: no image; upload one or pick an example")
        return result
    if len(files) > max_images:
        result.messages.append(f"error: {len(files)} images; at most {max_images} per request")
        return result
    from ovdet.data.image_io import read_image
    from ovdet.structures.detections import detection_records

    arrays, names, failed = [], [], []
    for path in files:
        try:
            arrays.append(read_image(path, model.max_load_pixels))
            names.append(path.name)
        except ImageError as e:
            result.messages.append(_upload_message(e, path))
            failed.append(path.name)
    result.results = {"categories": [], "detections": [], "failed": failed}
    if not arrays:
        return result
    try:
        detections = []
        with tqdm(total=len(arrays), desc="detect", unit="img", disable=not progress) as bar:
            for array in arrays:
                found, is_novel = model.detect(
                    [array], vocabulary, templates, score_thresh, ensemble
                )
                detections += found
                bar.update(1)
    except (OvdetError, OSError) as e:
        result.messages.append(f"error: {e}")
        return result
    result.results["categories"] = _categories(vocabulary, is_novel)
    result.results["images"] = []
    for image_id, (name, array, det) in enumerate(zip(names, arrays, detections), 1):
        novel = [bool(is_novel[i]) for i in det.labels.tolist()]
        view, scale = _display_view(array)
        drawn = draw_detections(view, det.boxes * scale, det.scores, det.names, novel=novel)
        result.drawn.append((drawn, name))
        height, width = array.shape[:2]
        result.results["images"].append(
            {"id": image_id, "file_name": name, "width": width, "height": height}
        )
        for record, flag in zip(detection_records(det, name, image_id, det.class_names), novel):
            record["novel"] = flag
            result.rows.append(
                [name, record["category"], round(record["score"], 3), _box_text(record["bbox"]),
                 "novel" if flag else "base"]
            )  # fmt: skip
            result.results["detections"].append(record)
    logger.info("%s", result.status.replace("\n", "; "))
    return result


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
    ensemble: bool,
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
        video: the uploaded file.
        fps: frames per second to detect on; 0 keeps every frame.
        out_dir: where the drawn video is written (``<video stem>_det.mp4``).
    """
    from ovdet.video.detection import detect_video
    from ovdet.video.io import VideoReader

    result = DemoVideoResult()
    vocabulary = _vocabulary_or_message(class_text, result.messages)
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
        with model.prepared(vocabulary, templates, ensemble) as (detector, is_novel):
            found = detect_video(
                detector, reader, path.name, drawn, score_thresh=score_thresh, novel=is_novel,
                progress=progress,
            )  # fmt: skip
    except (OvdetError, OSError) as e:  # ImageError: a missing, unreadable or truncated video
        result.messages.append(_upload_message(e, path))
        return result
    result.drawn = drawn
    result.results = {
        "categories": _categories(vocabulary, is_novel),
        "images": found.frames,
        "detections": found.detections,
        "video": {**found.video, "drawn": drawn.name},
    }
    for record in found.detections:
        result.rows.append(
            [record["timestamp"], record["frame"], record["category"], round(record["score"], 3),
             _box_text(record["bbox"]), "novel" if record["novel"] else "base"]
        )  # fmt: skip
    if found.video["corrupt_frames"]:
        result.messages.append(f"warning: {found.video['corrupt_frames']} corrupt frame(s) skipped")
    logger.info("%s", result.status.replace("\n", "; "))
    return result


SEARCH_HEADERS = ["rank", "score", "file", "kind", "box (x1, y1, x2, y2)", "time (s)"]


def search_index(model: DemoModel, index, text: str, top_k: int = 10, kind: str = "all"):
    """One query of the search tab (as ``tools/search.py query``), without the page.

    Args:
        model: the served checkpoint; its text classifier embeds the query.
        index: a :class:`~ovdet.search.RegionIndex` of the same embedding size.
        text: the query, e.g. "a red square".
        top_k: number of hits.
        kind: "region", "image" or "all".

    Returns:
        (contact sheet or None, table rows, status line); bad input is an ``error: ...`` status.
    """
    from ovdet.search import contact_sheet

    text = (text or "").strip()
    if not text:
        return None, [], "error: the query is empty; type what to search for"
    if kind not in ("region", "image", "all"):
        return None, [], f"error: kind {kind!r} is not region, image or all"
    try:
        with model._lock:
            query = model.detector.text_embeddings([text])[0].numpy()
    except (OvdetError, OSError) as e:
        return None, [], f"error: {e}"
    hits = index.search(query, int(top_k), None if kind == "all" else kind)
    rows = [
        [rank, round(h.score, 4), Path(h.file).name, h.kind,
         ", ".join(f"{v:.0f}" for v in h.box), h.timestamp]
        for rank, h in enumerate(hits, 1)
    ]  # fmt: skip
    return contact_sheet(hits, title=text), rows, f"{len(hits)} hit(s) for {text!r}"


def _load_search_index(path: str, model: DemoModel):
    from ovdet.search import RegionIndex

    if not Path(path).is_file():
        raise ConfigError(
            f"--search-index {path} does not exist; make it with tools/search.py index"
        )
    index = RegionIndex.load(path)
    if index.embed_dim != model.detector.head.embed_dim:
        raise ConfigError(
            f"the detector embeds into {model.detector.head.embed_dim} dimensions, the index "
            f"{index.embed_dim}"
        )
    return index


def _example_images(spec: str | None) -> list[Path]:
    if not spec:
        return []
    from ovdet.cli.infer import collect_images

    return collect_images(spec)


def _benchmark_defaults(checkpoint: Path) -> tuple[str | None, str | None]:
    """(classes, examples) of a checkpoint inside a synthetic benchmark's output folder."""
    root = checkpoint.resolve().parent.parent
    classes = root / "data" / "annotations" / "instances_val.json"
    examples = root / "held_out_images"
    return (
        str(classes) if classes.is_file() else None,
        str(examples) if examples.is_dir() and any(examples.iterdir()) else None,
    )


def build_app(
    model: DemoModel,
    classes: str,
    examples: Sequence[Path] = (),
    score_thresh: float | None = None,
    max_images: int = 16,
    progress: bool = False,
    index=None,
    max_video_frames: int = 300,
):
    """The Gradio page (a ``gradio.Blocks``; ``.launch()`` serves it).

    Args:
        model: the served checkpoint.
        classes: the class box's initial text (see :func:`parse_class_box`).
        examples: images offered as examples.
        score_thresh: the initial threshold (default: the model's).
        max_images: most images per request.
        progress: tqdm progress bars in the server's console.
        index: a :class:`~ovdet.search.RegionIndex` for a text-search tab (None: no tab).
        max_video_frames: most sampled frames per request of the video tab.
    """
    import gradio as gr

    # each request's results.json and drawn video, kept while the server runs
    out_root = Path(tempfile.mkdtemp(prefix="ovdet-demo-results-"))
    atexit.register(shutil.rmtree, out_root, ignore_errors=True)

    def run(files, class_text, templates, thresh, ensemble):
        from ovdet.utils.io import atomic_write_json

        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files or []]
        result = detect_files(
            model, paths, class_text, templates, float(thresh), bool(ensemble),
            max_images=max_images, progress=progress,
        )  # fmt: skip
        json_path = None
        if result.drawn:
            json_path = Path(tempfile.mkdtemp(dir=out_root)) / "results.json"
            atomic_write_json(result.results, json_path)
            json_path = str(json_path)
        return result.drawn, result.rows, json_path, result.status

    def run_video(video, class_text, templates, thresh, ensemble, fps):
        from ovdet.utils.io import atomic_write_json

        out_dir = Path(tempfile.mkdtemp(dir=out_root))
        result = detect_video_file(
            model, video, class_text, templates, float(thresh), bool(ensemble), float(fps),
            out_dir, max_frames=max_video_frames, progress=progress,
        )  # fmt: skip
        json_path = None
        if result.drawn is not None:
            json_path = out_dir / "results.json"
            atomic_write_json(result.results, json_path)
        drawn = None if result.drawn is None else str(result.drawn)
        return drawn, result.rows, None if json_path is None else str(json_path), result.status

    thresh = model.default_score_thresh if score_thresh is None else score_thresh
    with gr.Blocks(title="ovdet: open-vocabulary detection") as app:
        gr.Markdown(
            "# ovdet: open-vocabulary detection\n"
            "Upload images, name any classes, detect them. Classes outside the training "
            "vocabulary are **novel** (marked `*`, dashed boxes)."
        )
        with gr.Row():
            with gr.Column():
                files = gr.File(
                    label="Images", file_count="multiple", type="filepath", elem_id="images"
                )
                class_box = gr.Textbox(
                    value=classes,
                    label="Classes (comma-separated; or one per line with synonyms after commas)",
                    lines=2,
                    elem_id="classes",
                )
                with gr.Row():
                    templates = gr.Dropdown(
                        model.template_choices,
                        value=model.default_templates,
                        label="Prompt templates",
                        elem_id="templates",
                    )
                    score = gr.Slider(
                        0.0, 1.0, value=thresh, step=0.01, label="Score threshold",
                        elem_id="score-thresh",
                    )  # fmt: skip
                    ensemble = gr.Checkbox(
                        value=False, label="ViLD-ensemble (CLIP crop scores)", elem_id="ensemble"
                    )
                detect = gr.Button("Detect", variant="primary", elem_id="detect")
                if examples:
                    gr.Examples(
                        examples=[[[str(p)]] for p in examples],
                        inputs=[files],
                        label="Examples",
                    )
            with gr.Column():
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                gallery = gr.Gallery(
                    label="Detections", columns=1, height=560, object_fit="contain", elem_id="drawn"
                )
                table = gr.Dataframe(
                    headers=TABLE_HEADERS, label="Detections table", interactive=False,
                    elem_id="table",
                )  # fmt: skip
                download = gr.File(label="results.json", elem_id="results-json")
        detect.click(
            run,
            inputs=[files, class_box, templates, score, ensemble],
            outputs=[gallery, table, download, status],
        )
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column():
                    video = gr.Video(
                        label="Video", sources=["upload"], include_audio=True, elem_id="video"
                    )
                    video_classes = gr.Textbox(
                        value=classes, label="Classes", lines=2, elem_id="video-classes"
                    )
                    with gr.Row():
                        video_templates = gr.Dropdown(
                            model.template_choices, value=model.default_templates,
                            label="Prompt templates",
                        )  # fmt: skip
                        video_fps = gr.Slider(
                            0, 30, value=1, step=0.5, elem_id="video-fps",
                            label="Frames per second to detect on (0: every frame)",
                        )  # fmt: skip
                        video_score = gr.Slider(
                            0.0, 1.0, value=thresh, step=0.01, label="Score threshold",
                            elem_id="video-score-thresh",
                        )  # fmt: skip
                        video_ensemble = gr.Checkbox(value=False, label="ViLD-ensemble")
                    detect_video_button = gr.Button(
                        "Detect in video", variant="primary", elem_id="detect-video"
                    )
                with gr.Column():
                    video_status = gr.Textbox(
                        label="Status", interactive=False, elem_id="video-status"
                    )
                    drawn_video = gr.Video(label="Detections", elem_id="drawn-video")
                    video_table = gr.Dataframe(
                        headers=VIDEO_TABLE_HEADERS, label="Detections per frame",
                        interactive=False, elem_id="video-table",
                    )  # fmt: skip
                    video_json = gr.File(label="results.json", elem_id="video-results-json")
            detect_video_button.click(
                run_video,
                inputs=[video, video_classes, video_templates, video_score, video_ensemble,
                        video_fps],
                outputs=[drawn_video, video_table, video_json, video_status],
            )  # fmt: skip
        if index is not None:
            with gr.Tab("Text search"):
                with gr.Row():
                    query = gr.Textbox(label="Search for", elem_id="query")
                    top_k = gr.Slider(1, 50, value=10, step=1, label="Hits", elem_id="top-k")
                    kind = gr.Dropdown(["all", "region", "image"], value="all", label="Kind")
                search = gr.Button("Search", elem_id="search")
                search_status = gr.Textbox(
                    label="Status", interactive=False, elem_id="search-status"
                )
                sheet = gr.Image(label="Hits", type="pil", elem_id="sheet")
                hits = gr.Dataframe(headers=SEARCH_HEADERS, interactive=False, elem_id="hits")
            search.click(
                lambda text, k, which: search_index(model, index, text, k, which),
                inputs=[query, top_k, kind],
                outputs=[sheet, hits, search_status],
            )
    return app


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a port number (1-65535)")
    if args.max_images < 1:
        raise ConfigError("--max-images must be at least 1")
    if args.max_video_frames < 1:
        raise ConfigError("--max-video-frames must be at least 1")
    if args.score_thresh is not None and not 0.0 <= args.score_thresh <= 1.0:
        raise ConfigError(f"--score-thresh {args.score_thresh} is not between 0 and 1")
    try:
        import gradio  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"the web demo needs gradio ({e}): pip install 'ovdet[demo]'") from None
    from ovdet.clip.text_classifier import Vocabulary

    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        hint = (
            f"; make it with: {MAKE_DEFAULT_CHECKPOINT}"
            if args.checkpoint == DEFAULT_CHECKPOINT
            else ""
        )
        raise CheckpointError(f"checkpoint {checkpoint} does not exist{hint}")
    bench_classes, bench_examples = _benchmark_defaults(checkpoint)
    classes = args.classes or bench_classes
    vocabulary = Vocabulary.parse(classes) if classes else None  # bad ones fail before loading
    examples = _example_images(args.examples or bench_examples)
    logger.info("loading %s", checkpoint)
    model = DemoModel.from_checkpoint(checkpoint, device=args.device, clip=args.clip)
    if vocabulary is None:
        if not model.detector.train_class_names:
            raise CheckpointError(f"{checkpoint} names no training classes; pass --classes")
        vocabulary = Vocabulary.from_names(model.detector.train_class_names)
    index = _load_search_index(args.search_index, model) if args.search_index else None
    app = build_app(
        model,
        format_vocabulary(vocabulary),
        examples,
        score_thresh=args.score_thresh,
        max_images=args.max_images,
        progress=not args.no_progress,
        index=index,
        max_video_frames=args.max_video_frames,
    )
    logger.info("serving %s on http://%s:%d (Ctrl+C stops)", checkpoint, args.host, args.port)
    app.launch(
        server_name=args.host,
        server_port=args.port,
        allowed_paths=sorted({str(p.resolve().parent) for p in examples}),
        quiet=not args.verbose,
    )
    return 0
