"""Video input: frames sampled at a rate with timestamps, corrupt frames skipped and counted, bad
files as one-line errors, and tools/infer.py on a generated clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (av) is not installed")

from ovdet.utils.errors import ImageError  # noqa: E402
from ovdet.video.io import VideoReader, VideoWriter  # noqa: E402
from tests.conftest import draw_toy_image  # noqa: E402


def make_clip(path: Path, codec: str, frames: int = 20, fps: int = 10, seed: int = 0) -> None:
    """A 64 x 64 clip of toy images whose background brightness encodes the frame index."""
    rng = np.random.default_rng(seed)
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=fps)
    stream.width = stream.height = 64
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    for i in range(frames):
        image = np.asarray(draw_toy_image(rng)[0]).copy()
        image[:8, :8] = i * 12  # a frame marker in a corner
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    make_clip(path, "libx264" if "libx264" in av.codecs_available else "mpeg4")
    return path


def test_frames_are_sampled_at_the_rate_with_timestamps(clip):
    reader = VideoReader(clip, fps=2)
    frames = list(reader)
    assert [round(f.timestamp, 3) for f in frames] == [0.0, 0.5, 1.0, 1.5]
    assert [f.index for f in frames] == [0, 5, 10, 15]
    assert reader.decoded_frames == 20 and reader.corrupt_frames == 0
    assert reader.expected_samples() == 4
    # The frame marker is the frame's own (codec noise aside): the right frames were kept.
    markers = [float(f.image[2:6, 2:6].mean()) for f in frames]
    np.testing.assert_allclose(markers, [0, 60, 120, 180], atol=12)
    assert frames[0].image.shape == (64, 64, 3) and frames[0].image.dtype == np.uint8
    assert len(list(VideoReader(clip, fps=None))) == 20


def test_corrupt_frames_are_skipped_and_counted(tmp_path):
    path = tmp_path / "clip.avi"
    make_clip(path, "mjpeg")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 3) if data[i : i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == 20
    for k in (5, 6):  # wipe two JPEG frames
        data[starts[k] : starts[k + 1] - 16] = bytes(starts[k + 1] - 16 - starts[k])
    path.write_bytes(bytes(data))
    reader = VideoReader(path)
    frames = list(reader)
    assert reader.corrupt_frames == 2
    assert len(frames) == 18


def test_missing_truncated_and_non_video_files_are_one_line_errors(clip, tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        VideoReader(tmp_path / "nope.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(ImageError, match="truncated"):
        list(VideoReader(cut))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    with pytest.raises(ImageError) as info:
        list(VideoReader(text))
    assert "\n" not in str(info.value)


def test_writer_is_atomic_and_readable(tmp_path):
    out = tmp_path / "drawn.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, fps=5) as writer:
        writer.write(np.zeros((64, 64, 3), np.uint8))
        raise RuntimeError("interrupted")
    assert not out.exists() and not list(tmp_path.iterdir())
    with VideoWriter(out, fps=5) as writer:
        for i in range(6):
            writer.write(np.full((64, 64, 3), i * 40, np.uint8))
    assert len(list(VideoReader(out))) == 6


@pytest.mark.slow
def test_infer_cli_on_a_clip(trained_checkpoint, clip, tmp_path, capsys):
    from ovdet.cli.infer import main

    out = tmp_path / "out"
    code = main([
        "--checkpoint", str(trained_checkpoint), "--classes", "red square,blue circle",
        "--input", str(clip), "--fps", "2", "--output", str(out), "--no-progress",
        "--score-thresh", "0.3", "--save-embeddings",
    ])  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [im["timestamp"] for im in results["images"]] == [0.0, 0.5, 1.0, 1.5]
    assert [im["frame"] for im in results["images"]] == [0, 5, 10, 15]
    assert results["video"]["decoded_frames"] == 20 and results["video"]["corrupt_frames"] == 0
    dets = results["detections"]
    assert dets, "the trained model finds toy objects in the frames"
    by_id = {im["id"]: im for im in results["images"]}
    for d in dets:
        assert d["timestamp"] == by_id[d["image_id"]]["timestamp"]
        assert d["category"] in ("red square", "blue circle")
    assert np.load(out / "embeddings.npy").shape == (len(dets), 32)
    drawn = Path(results["video"]["drawn"])
    assert drawn.is_file() and len(list(VideoReader(drawn))) == 4

    # Bad videos: one line on stderr, exit status 2.
    for bad, message in [(tmp_path / "nope.mp4", "does not exist"), (clip, "truncated")]:
        if bad == clip:
            bad = tmp_path / "cut.mp4"
            bad.write_bytes(clip.read_bytes()[:2000])
        capsys.readouterr()
        code = main([
            "--checkpoint", str(trained_checkpoint), "--classes", "red square",
            "--input", str(bad), "--output", str(tmp_path / "o2"), "--no-progress",
        ])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error:") and message in err and "\n" not in err
    assert main([
        "--checkpoint", str(trained_checkpoint), "--classes", "red square", "--input",
        str(clip), "--output", str(tmp_path / "o3"), "--coco-out", str(tmp_path / "c.json"),
    ]) == 2  # fmt: skip


def test_infer_cli_video_bad_input_is_one_line_before_loading(clip, tmp_path, capsys):
    """Caught before the checkpoint is read (``x.pt`` does not exist): one line, exit 2."""
    from ovdet.cli.infer import main
    from tests.conftest import assert_one_line_error

    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all\n")
    cases = [
        (tmp_path / "nope.mp4", [], f"error: video {tmp_path / 'nope.mp4'} does not exist"),
        (notes, [], f"error: video {notes} cannot be read (truncated or not a video): "),
        (clip, ["--fps", "-1"], "error: --fps must be 0 (every frame) or positive, got -1.0"),
        (clip, ["--coco-out", str(tmp_path / "c.json")],
         "error: --coco-out and --yolo-out label image files; for a video, run on its frames as "
         "images"),
    ]  # fmt: skip
    for video, extra, message in cases:
        argv = ["--checkpoint", str(tmp_path / "x.pt"), "--classes", "red square", "--input",
                str(video), "--output", str(tmp_path / "out"), *extra]  # fmt: skip
        assert main(argv) == 2
        assert assert_one_line_error(capsys.readouterr().err).startswith(message)
