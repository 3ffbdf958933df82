"""The Gradio page: an image tab, a video tab and (with an index) a text-search tab.

Each tab's button calls the request function of its module (:func:`~ovdet.demo.images.
detect_files`, :func:`~ovdet.demo.video.detect_video_file`, :func:`~ovdet.demo.search.
search_index`); this module only lays out the page and writes each request's results JSON.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ovdet.demo.exemplars import add_exemplar_class, exemplar_list_text
from ovdet.demo.images import TABLE_HEADERS, detect_files
from ovdet.demo.model_cache import DemoModel
from ovdet.demo.search import SEARCH_HEADERS, search_index
from ovdet.demo.video import VIDEO_TABLE_HEADERS, detect_video_file

if TYPE_CHECKING:
    import gradio

    from ovdet.search import RegionIndex

__all__ = ["build_app"]

CLIP_RESCORING_LABEL = "CLIP rescoring (CLIP scores of the box crops)"


def build_app(
    model: DemoModel,
    classes: str,
    examples: Sequence[Path] = (),
    score_thresh: float | None = None,
    max_images: int = 16,
    progress: bool = False,
    index: RegionIndex | None = None,
    max_video_frames: int = 300,
) -> gradio.Blocks:
    """The Gradio page (a ``gradio.Blocks``; ``.launch()`` serves it).

    Args:
        model: the served checkpoint.
        classes: the class box's initial text (see :func:`~ovdet.demo.classes.parse_class_box`).
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

    def run(files, class_text, templates, thresh, clip_rescoring, exemplar_specs):
        from ovdet.utils.io import atomic_write_json

        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files or []]
        result = detect_files(
            model, paths, class_text, templates, float(thresh), bool(clip_rescoring),
            max_images=max_images, progress=progress, exemplars=exemplar_specs or [],
        )  # fmt: skip
        json_path = None
        if result.drawn:
            json_path = Path(tempfile.mkdtemp(dir=out_root)) / "results.json"
            atomic_write_json(result.results, json_path)
            json_path = str(json_path)
        return result.drawn, result.rows, json_path, result.status

    def run_video(video, class_text, templates, thresh, clip_rescoring, fps):
        from ovdet.utils.io import atomic_write_json

        out_dir = Path(tempfile.mkdtemp(dir=out_root))
        result = detect_video_file(
            model, video, class_text, templates, float(thresh), bool(clip_rescoring),
            float(fps), out_dir, max_frames=max_video_frames, progress=progress,
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
            "Upload images, name any classes (or give them by a box on an example image), "
            "detect them. Classes outside the training vocabulary are **novel** (marked `*`, "
            "dashed boxes)."
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
                    clip_rescoring = gr.Checkbox(
                        value=False, label=CLIP_RESCORING_LABEL, elem_id="clip-rescoring"
                    )
                exemplar_specs = gr.State([])
                with gr.Accordion("Classes by example (draw a box)", open=True):
                    exemplar_editor = gr.ImageEditor(
                        label="Exemplar image: draw over the object (or type its box below)",
                        type="numpy", sources=["upload"], elem_id="exemplar-image",
                    )  # fmt: skip
                    with gr.Row():
                        exemplar_name = gr.Textbox(label="Class name", elem_id="exemplar-name")
                        exemplar_box = gr.Textbox(
                            label="Box x,y,w,h (optional)", elem_id="exemplar-box"
                        )
                        exemplar_text = gr.Checkbox(
                            value=False, label="also by its name's text", elem_id="exemplar-text"
                        )
                    with gr.Row():
                        add_exemplar = gr.Button("Add exemplar class", elem_id="add-exemplar")
                        clear_exemplars = gr.Button("Clear", elem_id="clear-exemplars")
                    exemplar_status = gr.Textbox(
                        value=exemplar_list_text([]), label="Exemplar classes", interactive=False,
                        elem_id="exemplar-status",
                    )  # fmt: skip
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
        add_exemplar.click(
            add_exemplar_class,
            inputs=[exemplar_specs, exemplar_name, exemplar_editor, exemplar_box, exemplar_text],
            outputs=[exemplar_specs, exemplar_status],
        )
        clear_exemplars.click(
            lambda: ([], exemplar_list_text([])), outputs=[exemplar_specs, exemplar_status]
        )
        detect.click(
            run,
            inputs=[files, class_box, templates, score, clip_rescoring, exemplar_specs],
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
                        video_clip_rescoring = gr.Checkbox(
                            value=False, label="CLIP rescoring", elem_id="video-clip-rescoring"
                        )
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
                inputs=[video, video_classes, video_templates, video_score, video_clip_rescoring,
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
