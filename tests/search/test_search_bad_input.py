"""``ovdet-search`` bad arguments and inputs caught before any model is loaded: one ``error:`` line,
exit status 2 (docs/RELIABILITY.md). The cases needing a checkpoint or an index are in
test_search.py."""

from __future__ import annotations

import pytest

from ovdet.cli.search import main
from tests.conftest import assert_one_line_error


@pytest.mark.parametrize(
    "argv, message",
    [
        (["index", "--input", "{tmp}", "--fps", "-1"],
         "error: --fps must be 0 (every frame) or positive, got -1.0"),
        (["index", "--input", "{tmp}", "--save-every", "0"],
         "error: --save-every must be at least 1"),
        (["index", "--input", "{tmp}"], "error: no images or videos in folder {tmp}"),
        (["query", "--text", "a red square", "--top-k", "0"], "error: --top-k must be at least 1"),
        (["query", "--text", "   "], "error: --text is empty"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")  # a folder with no image or video
    fill = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if fill[0] == "index":
        fill += ["--checkpoint", str(tmp_path / "x.pt"), "--index", str(tmp_path / "i.index")]
    else:
        fill += ["--index", str(tmp_path / "i.index"), "--output", str(tmp_path / "out")]
    assert main(fill) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert line == message.replace("{tmp}", str(tmp_path))
