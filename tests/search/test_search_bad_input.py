"""``ovdet-search`` bad arguments and inputs caught before any model is loaded: one ``error:`` line,
exit status 2 (docs/RELIABILITY.md), damaged index files included. The cases needing a trained
checkpoint are in test_search.py."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed")

from ovdet.cli.search import build_parser, main  # noqa: E402
from ovdet.search import RegionIndex  # noqa: E402
from tests.conftest import assert_one_line_error  # noqa: E402


@pytest.mark.parametrize(
    "argv, message",
    [
        (["index", "--input", "{tmp}", "--fps", "-1"],
         "error: --fps must be 0 (every frame) or positive, got -1.0"),
        (["index", "--input", "{tmp}", "--fps", "nan"],
         "error: --fps must be 0 (every frame) or positive, got nan"),
        (["index", "--input", "{tmp}", "--fps", "inf"],
         "error: --fps must be 0 (every frame) or positive, got inf"),
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


def _valid_header(dim: int = 4) -> dict:
    entry = {"file": "/a.png", "kind": "image", "box": [0.0, 0.0, 8.0, 8.0], "timestamp": None}
    return {"version": 1, "embed_dim": dim, "meta": {}, "entries": [entry],
            "files": {"/a.png": {"size": 1, "mtime": 1.0}}}  # fmt: skip


def _write_index(path, header, vector_dim: int = 4) -> None:
    """An index file as RegionIndex.save writes it, with any header and one vector."""
    import faiss

    flat = faiss.IndexFlatIP(vector_dim)
    flat.add(np.ones((1, vector_dim), np.float32))
    buffer = io.BytesIO()
    header_bytes = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(buffer, faiss=faiss.serialize_index(flat), header=header_bytes)
    path.write_bytes(buffer.getvalue())


def _without_kind() -> dict:
    header = _valid_header()
    del header["entries"][0]["kind"]
    return header


@pytest.mark.parametrize(
    "damage, message",
    [
        ("empty", "is not a readable search index (truncated?): No data left in file"),
        ("list header", "is not a readable search index: its header is a list, not a mapping"),
        ("no kind", "is not a readable search index: entry 0 has no 'kind' of region or image"),
        ("other dimension",
         "is not a readable search index: its vectors have 8 dimensions, its header 4"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["query", "index"])
def test_damaged_index_is_a_one_line_error(command, damage, message, tmp_path, capsys):
    index = tmp_path / "i.index"
    if damage == "empty":
        index.write_bytes(b"")
    elif damage == "list header":
        _write_index(index, [1, 2, 3])
    elif damage == "no kind":
        _write_index(index, _without_kind())
    else:
        _write_index(index, _valid_header(4), vector_dim=8)
    _write_index(tmp_path / "ok.index", _valid_header())
    assert len(RegionIndex.load(tmp_path / "ok.index")) == 1  # the undamaged file loads

    (tmp_path / "a.png").write_bytes(b"")  # never read: the index fails first
    if command == "index":
        argv = ["index", "--checkpoint", str(tmp_path / "x.pt"), "--input",
                str(tmp_path / "a.png"), "--index", str(index)]  # fmt: skip
    else:
        argv = ["query", "--index", str(index), "--text", "a cat", "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert line.startswith(f"error: {index} ") and message in line, line


def test_index_help_names_prune_and_clip(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["index", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--prune also drop the entries of indexed files that no longer exist" in text
    assert "--clip CLIP CLIP spec replacing the checkpoint's" in text
