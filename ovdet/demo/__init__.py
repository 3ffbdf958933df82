"""The web demo (Gradio) of a checkpoint: drop pictures or a video, type names, look.

The page (:func:`build_app`, :mod:`ovdet.demo.app`) has an image tab, a video tab and, given an
index of ``tools/search.py``, a text-search tab. Each tab's request runs without the page, so
tests drive it directly:

* :class:`DemoModel` (:mod:`ovdet.demo.model_cache`): the served checkpoint, one detector per
  prompt-template set, requests one at a time;
* :func:`parse_class_box` / :func:`format_vocabulary` (:mod:`ovdet.demo.classes`): the class box,
  in the formats of ``tools/infer.py --classes``;
* :func:`detect_files` (:mod:`ovdet.demo.images`): read, detect, draw, tabulate images;
* :func:`detect_video_file` (:mod:`ovdet.demo.video`): the same for a video sampled at a frame
  rate, by the code path of ``tools/infer.py --input clip.mp4``;
* :func:`search_index` (:mod:`ovdet.demo.search`): a text query's hits in a region index.

Bad input (a file that is not an image or not a whole video, an empty or duplicated vocabulary)
is the command line's one-line message in the page; the app keeps serving. The command line is
``tools/demo.py`` (:mod:`ovdet.cli.demo`).
"""

from ovdet.demo.app import build_app
from ovdet.demo.classes import format_vocabulary, parse_class_box
from ovdet.demo.images import TABLE_HEADERS, DemoResult, detect_files
from ovdet.demo.model_cache import DemoModel
from ovdet.demo.search import SEARCH_HEADERS, load_search_index, search_index
from ovdet.demo.video import VIDEO_TABLE_HEADERS, DemoVideoResult, detect_video_file

__all__ = [
    "SEARCH_HEADERS",
    "TABLE_HEADERS",
    "VIDEO_TABLE_HEADERS",
    "DemoModel",
    "DemoResult",
    "DemoVideoResult",
    "build_app",
    "detect_files",
    "detect_video_file",
    "format_vocabulary",
    "load_search_index",
    "parse_class_box",
    "search_index",
]
