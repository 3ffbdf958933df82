import pytest

from ovdet.clip import ClipSpec, load_clip
from ovdet.utils.errors import CheckpointError, ConfigError


def test_spec_parsing():
    assert ClipSpec.parse("ViT-B-32:openai") == ClipSpec("ViT-B-32", "openai")
    assert ClipSpec.parse("ViT-B-32") == ClipSpec("ViT-B-32", None)
    assert ClipSpec.parse("local-dir:/a/b:/c/w.pt") == ClipSpec("local-dir:/a/b", "/c/w.pt")
    assert ClipSpec.parse("ViT-B-32:/x/w.pt").weights_is_file
    assert ClipSpec.parse("ViT-B-32").embed_dim == 512
    for bad in ("", "ViT-B-32:"):
        with pytest.raises(ConfigError):
            ClipSpec.parse(bad)


def test_unknown_model_and_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown CLIP model"):
        load_clip("NoSuchNet-7")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_clip(f"ViT-B-32:{tmp_path / 'missing.pt'}")


def test_local_checkpoint_loads_with_a_file_digest(tiny_clip):
    clip = load_clip(tiny_clip)
    assert clip.embed_dim == 32 and clip.image_size == 32 and clip.context_length == 16
    assert clip.weights_digest().startswith("file:")
    assert not any(p.requires_grad for p in clip.model.parameters())


def test_weights_of_another_model_are_a_checkpoint_error(tiny_clip, tmp_path):
    import json

    from tests.conftest import TINY_CLIP_CONFIG

    other = json.loads(json.dumps(TINY_CLIP_CONFIG))
    other["model_cfg"]["embed_dim"] = 16
    (tmp_path / "open_clip_config.json").write_text(json.dumps(other))
    weights = tiny_clip.rsplit(":", 1)[1]
    with pytest.raises(CheckpointError, match="do not fit"):
        load_clip(f"local-dir:{tmp_path}:{weights}")
