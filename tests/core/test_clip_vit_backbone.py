"""The frozen CLIP ViT backbone (F-VLM with a ViT CLIP): its tokens are open_clip's own, at
CLIP's size and (with open_clip's resizing of the positional embedding) at another; the dense
path is open_clip's last block with each token seeing only itself; a region is the mean of its
dense tokens; bad set-ups are one-line errors. Training and rescoring through the detector:
test_clip_backbone.py (parametrised over both towers)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import resize_pos_embed
from open_clip.transformer import VisionTransformer

from ovdet.clip import load_clip
from ovdet.config import load_config
from ovdet.core.clip_backbone import CLIP_FEATURES_KEY
from ovdet.core.clip_vit_backbone import FrozenClipViT
from ovdet.tv import build_model
from ovdet.utils.errors import ConfigError
from tests.conftest import TINY_VIT_CLIP_CONFIG

VIT_BACKBONE = ["MODEL.BACKBONE.NAME", "build_clip_vit_fpn_backbone"]


@pytest.fixture(scope="module")
def vit(tiny_vit_clip):
    """(the detector's frozen ViT tower, the detector, open_clip's model of the same file)."""
    model = build_model(load_config("tiny", [*VIT_BACKBONE, "MODEL.OVDET.CLIP", tiny_vit_clip]))
    return model.backbone.clip, model.eval(), load_clip(tiny_vit_clip).model


def _open_clip_tokens(visual, clip_input: torch.Tensor) -> list[torch.Tensor]:
    """open_clip's patch tokens after each of blocks 1..L-1: Tensor[B, width, h, w] each."""
    blocks = len(visual.transformer.resblocks)
    out = visual.forward_intermediates(
        clip_input, indices=list(range(blocks - 1)), intermediates_only=True, output_fmt="NCHW"
    )
    return out["image_intermediates"]


def test_tokens_at_clips_own_size_are_open_clips(vit):
    tower, model, clip = vit
    assert tower.stage_depths == {"res2": 1, "res3": 2, "res4": 3, "res5": 4}  # of 5 blocks
    images = torch.rand(2, 3, 64, 64)
    x = torch.stack([model.transform.normalize(i) for i in images])
    tokens = tower.patch_tokens(x)
    expected = _open_clip_tokens(clip.visual, tower.clip_input(x))
    for depth in (1, 2, 3, 4):
        torch.testing.assert_close(tokens[depth], expected[depth - 1], rtol=0, atol=1e-6)
    out = tower(x)
    assert torch.equal(out[CLIP_FEATURES_KEY], tokens[4])
    assert torch.equal(out["res4"], tokens[3])  # stride 16 = P: not resized
    assert out["res5"].shape == (2, 32, 2, 2) and out["res2"].shape == (2, 32, 16, 16)
    # stride 32 from 16: bilinear halving is the 2 x 2 mean
    torch.testing.assert_close(out["res5"], F.avg_pool2d(tokens[4], 2))


def test_tokens_at_another_size_are_open_clips_with_a_resized_positional_embedding(
    vit, tiny_vit_clip, tmp_path
):
    """open_clip at a 64 x 96 input, its positional embedding resized by open_clip's own
    ``resize_pos_embed`` (bilinear), gives the tower's tokens of a 64 x 96 image."""
    tower, model, clip = vit
    config = json.loads(json.dumps(TINY_VIT_CLIP_CONFIG))
    config["model_cfg"]["vision_cfg"]["image_size"] = [64, 96]
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    wide = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    state = clip.state_dict()
    resize_pos_embed(state, wide, interpolation="bilinear", antialias=False)
    wide.load_state_dict(state)
    x = model.transform.normalize(torch.rand(3, 64, 96))[None]
    tokens = tower.patch_tokens(x)
    expected = _open_clip_tokens(wide.visual, tower.clip_input(x))
    assert tokens[4].shape == (1, 32, 4, 6)
    for depth in (1, 2, 3, 4):
        torch.testing.assert_close(tokens[depth], expected[depth - 1], rtol=0, atol=1e-5)


def test_the_dense_path_is_the_last_block_with_each_token_seeing_only_itself(vit):
    """The value-path code against open_clip's own last block run with an attention mask that
    lets each token attend only to itself, then ``ln_post`` and ``proj``."""
    tower, model, clip = vit
    tokens = tower(model.transform.normalize(torch.rand(3, 64, 96))[None])[CLIP_FEATURES_KEY]
    sequence = tokens.flatten(2).transpose(1, 2)  # 1 x 24 x width
    only_itself = torch.full((24, 24), float("-inf")).fill_diagonal_(0.0)
    visual = clip.visual
    with torch.no_grad():
        expected = visual.transformer.resblocks[-1](sequence, attn_mask=only_itself)
        expected = visual.ln_post(expected) @ visual.proj
        full_attention = visual.transformer.resblocks[-1](sequence)
    dense = tower.dense_embeddings(tokens)
    assert dense.shape == (1, 32, 4, 6)
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), expected)
    # the mask mattered: with full attention the tokens are others
    assert not torch.allclose(visual.ln_post(full_attention) @ visual.proj, expected, atol=1e-3)


def test_a_regions_embedding_is_the_mean_of_its_dense_tokens(vit):
    tower, model, _ = vit
    tokens = tower(model.transform.normalize(torch.rand(3, 64, 96))[None])[CLIP_FEATURES_KEY]
    dense = tower.dense_embeddings(tokens)[0]  # 32 x 4 x 6, tokens of 16 px
    boxes = torch.tensor(
        [[0.0, 0.0, 96.0, 64.0], [16.0, 32.0, 48.0, 64.0], [80.0, 0.0, 96.0, 16.0]]
    )
    expected = torch.stack(
        [dense.mean((1, 2)), dense[:, 2:4, 1:3].mean((1, 2)), dense[:, 0, 5]]
    )  # the whole image, a 2 x 2 block of tokens, one token
    got = tower.region_embeddings(tokens, [boxes])
    torch.testing.assert_close(got, F.normalize(expected, dim=-1))
    assert tower.region_embeddings(tokens, [boxes[:0]]).shape == (0, 32)


def test_vit_set_ups_it_cannot_run_are_one_line_errors(vit, tiny_resnet_clip):
    tower, _, _ = vit
    with pytest.raises(ValueError, match="multiples of its patch size 16, got 64 x 72") as e:
        tower(torch.zeros(1, 3, 64, 72))
    assert "\n" not in str(e.value)
    with pytest.raises(
        ConfigError, match="needs a ViT CLIP .* build_clip_resnet_fpn_backbone"
    ) as e:
        build_model(load_config("tiny", [*VIT_BACKBONE, "MODEL.OVDET.CLIP", tiny_resnet_clip]))
    assert "\n" not in str(e.value)
    coca = VisionTransformer(32, 16, 32, 1, 2, 4.0, attentional_pool=True, attn_pooler_heads=2)
    with pytest.raises(ConfigError, match="attentional pooler"):
        FrozenClipViT(coca, (0.5,) * 3, (0.25,) * 3)


def test_a_patch_size_not_dividing_32_pads_inputs_to_both():
    """P = 12: the detector pads to lcm(32, 12) = 96, where every stage's size is exact."""
    visual = VisionTransformer(48, 12, 32, 2, 2, 4.0, output_dim=16)
    tower = FrozenClipViT(visual, (0.5,) * 3, (0.25,) * 3)
    assert tower.size_divisibility == 96 and tower.stage_depths["res5"] == 1
    out = tower(torch.rand(1, 3, 96, 192))
    sizes = {k: tuple(v.shape[-2:]) for k, v in out.items()}
    assert sizes == {"res2": (24, 48), "res3": (12, 24), "res4": (6, 12), "res5": (3, 6),
                     CLIP_FEATURES_KEY: (8, 16)}  # fmt: skip
    assert tower.region_embeddings(
        out[CLIP_FEATURES_KEY], [torch.tensor([[0, 0, 96, 96.0]])]
    ).shape == (1, 16)
