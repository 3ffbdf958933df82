"""The CLIP backend protocol with transformers models (tiny, random, built offline)."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from ovdet.clip import ClipBackend, ClipSpec, HfClip, load_clip
from ovdet.clip.hf import pooled_features
from ovdet.clip.text_classifier import TextClassifierBuilder
from ovdet.core.teacher import ClipRegionTeacher, scale_boxes
from ovdet.utils.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")

_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 2}  # fmt: skip
_TEXT = {**_TOWER, "max_position_embeddings": 16}
_VISION = {**_TOWER, "image_size": 32, "patch_size": 8}
_SENTENCE = "a photo of the cat dog kite umbrella person this is there in scene small large"


def _clip_tokenizer(folder):
    """A CLIPTokenizer on the CLIP BPE vocabulary that open_clip ships (no download)."""
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): i for token, i in simple.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
    lines = ["#version: 0.2", *(" ".join(m) for m in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def _siglip_tokenizer(folder):
    """A SiglipTokenizer on a tiny sentencepiece model trained here."""
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    words = _SENTENCE.split(" ")
    sentences = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=60,
        model_type="unigram", hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    (folder / "spm.model").write_bytes(model.getvalue())
    return transformers.SiglipTokenizer(str(folder / "spm.model"))


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    """A ``save_pretrained`` folder: tiny random CLIPModel, tokenizer, image processor."""
    folder = tmp_path_factory.mktemp("hf_clip")
    tokenizer = _clip_tokenizer(folder)
    config = transformers.CLIPConfig(text_config=_TEXT, vision_config=_VISION, projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformers.CLIPImageProcessor(size=32, crop_size=32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_siglip_dir(tmp_path_factory):
    """A ``save_pretrained`` folder: tiny random SiglipModel, tokenizer, image processor."""
    folder = tmp_path_factory.mktemp("hf_siglip")
    tokenizer = _siglip_tokenizer(folder)
    ids = {"bos_token_id": None, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    text = {**_TEXT, "vocab_size": len(tokenizer), **ids}
    config = transformers.SiglipConfig(text_config=text, vision_config=_VISION)
    torch.manual_seed(0)
    transformers.SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_clip(hf_clip_dir) -> HfClip:
    return load_clip("hf:" + str(hf_clip_dir))


@pytest.fixture(scope="module")
def reference(hf_clip_dir):
    """The tiny CLIP and its tokenizer loaded by transformers alone, to encode by hand."""
    model = transformers.CLIPModel.from_pretrained(hf_clip_dir).eval()
    return model, transformers.AutoTokenizer.from_pretrained(hf_clip_dir)


def _by_hand_text(model, tokenizer, prompts, **tokenizer_kwargs):
    """Tensor[N, D]: L2-normalised ``get_text_features``, one prompt at a time."""
    rows = []
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer([prompt], return_tensors="pt", **tokenizer_kwargs)
            if model.config.model_type == "siglip":
                inputs = {"input_ids": inputs["input_ids"]}  # SigLIP is trained without a mask
            rows.append(pooled_features(model.get_text_features(**inputs)))
    return F.normalize(torch.cat(rows), dim=-1)


def _by_hand_regions(model, image, boxes, mean, std, scales=(1.0, 1.5)):
    """Tensor[N, D]: RoIAlign crops through ``get_image_features``, summed over scales."""
    from torchvision.ops import roi_align

    total = 0
    for scale in scales:
        rois = torch.cat([torch.zeros(len(boxes), 1), scale_boxes(boxes, scale)], dim=1)
        crops = roi_align(image, rois, (32, 32), 1.0, sampling_ratio=2, aligned=True)
        crops = (crops - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            total = total + F.normalize(pooled_features(model.get_image_features(crops)), dim=-1)
    return F.normalize(total, dim=-1)


def test_hf_clip_loads_through_the_protocol(hf_clip_dir, hf_clip):
    spec = "hf:" + str(hf_clip_dir)
    assert ClipSpec.parse(spec).embed_dim == 16  # from config.json, no weights loaded
    assert ClipSpec.parse(spec).backend == "hf"
    clip = hf_clip
    assert isinstance(clip, HfClip) and isinstance(clip, ClipBackend)
    assert (clip.embed_dim, clip.image_size, clip.context_length) == (16, 32, 16)
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert clip.model_id == spec and clip.weights_digest().startswith("files:")
    assert not any(p.requires_grad for p in clip.model.parameters())
    assert clip.encode_text(["a cat.", "a photo of a dog."]).shape == (2, 16)
    assert clip.encode_image(torch.randn(3, 3, 32, 32)).shape == (3, 16)


def test_text_classifier_matches_transformers_and_hits_the_cache(
    hf_clip_dir, hf_clip, reference, tmp_path, monkeypatch
):
    builder = TextClassifierBuilder(hf_clip, "a", cache_dir=tmp_path)
    emb = builder(["cat", "traffic light"])  # prompts of different lengths: padded batch
    assert emb.shape == (2, 16) and builder.num_text_tower_calls == 1
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    expected = _by_hand_text(*reference, ["a cat.", "a traffic light."])
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=1e-4)

    def text_tower_must_not_run(*args, **kwargs):
        raise AssertionError("the text tower ran on a cache hit")

    monkeypatch.setattr(HfClip, "encode_text", text_tower_must_not_run)
    monkeypatch.setattr(transformers.CLIPModel, "get_text_features", text_tower_must_not_run)
    again = TextClassifierBuilder("hf:" + str(hf_clip_dir), "a", cache_dir=tmp_path)
    assert torch.equal(again(["cat", "traffic light"]), emb)
    assert again.num_text_tower_calls == 0 and again._clip is None  # not even loaded


def test_long_names_warn_with_the_hf_tokenizer(hf_clip):
    builder = TextClassifierBuilder(hf_clip, "a", cache_dir="")
    with pytest.warns(UserWarning, match="truncated"):
        emb = builder([" ".join(["enormous"] * 40), "cat"])
    assert emb.shape == (2, 16)


def test_region_teacher_matches_roi_align_crops_by_hand(hf_clip, reference):
    clip = hf_clip
    teacher = ClipRegionTeacher.from_clip(clip)
    assert isinstance(teacher, torch.nn.Module) and teacher.mean.shape == (1, 3, 1, 1)
    names = [n for n, _ in teacher.named_parameters()]
    assert names and not any(n.startswith("visual.text") for n in names)
    torch.manual_seed(1)
    image = torch.rand(1, 3, 64, 48)
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [10.0, 20.0, 47.0, 63.0]])
    emb = teacher(image, [boxes])
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    expected = _by_hand_regions(reference[0], image, boxes, clip.mean, clip.std)
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=1e-4)
    # Moving the teacher moves the image tower and only it.
    try:
        teacher.to(torch.float64)
        assert clip.model.vision_model.embeddings.patch_embedding.weight.dtype == torch.float64
        assert clip.model.text_projection.weight.dtype == torch.float32
        assert teacher.mean.dtype == torch.float64
    finally:
        teacher.to(torch.float32)


def test_siglip_embeds_text_and_regions(hf_siglip_dir):
    spec = "hf:" + str(hf_siglip_dir)
    assert ClipSpec.parse(spec).embed_dim == 32
    clip = load_clip(spec)
    assert (clip.model_type, clip.embed_dim, clip.context_length) == ("siglip", 32, 16)
    assert clip.mean == (0.5, 0.5, 0.5)
    model = transformers.SiglipModel.from_pretrained(hf_siglip_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_siglip_dir)
    emb = TextClassifierBuilder(clip, "a", cache_dir="")(["cat", "dog"])
    expected = _by_hand_text(
        model, tokenizer, ["a cat.", "a dog."], padding="max_length", max_length=16
    )
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=1e-4)
    image = torch.rand(1, 3, 40, 40)
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [8.0, 4.0, 39.0, 30.0]])
    regions = ClipRegionTeacher.from_clip(clip, crop_scales=(1.0,))(image, [boxes])
    expected = _by_hand_regions(model, image, boxes, clip.mean, clip.std, (1.0,))
    torch.testing.assert_close(regions, expected, atol=1e-5, rtol=1e-4)


def test_missing_or_incomplete_folders_are_one_line_errors(hf_clip_dir, tmp_path):
    missing = f"hf:{tmp_path / 'missing'}"
    for call in (lambda: load_clip(missing), lambda: ClipSpec.parse(missing).embed_dim):
        with pytest.raises(ConfigError, match="does not exist") as info:
            call()
        assert "\n" not in str(info.value)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(hf_clip_dir / "config.json", no_weights)
    assert ClipSpec.parse(f"hf:{no_weights}").embed_dim == 16
    with pytest.raises(CheckpointError) as info:
        load_clip(f"hf:{no_weights}")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="names no folder"):
        ClipSpec.parse("hf:")
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        ClipSpec.parse("hf:ovdet-tests/no-such-clip-model").embed_dim  # noqa: B018
