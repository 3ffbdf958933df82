"""The torchvision engine's C4 architecture: detectron2's anchors and strides, the stride in
the 1x1 convolutions, detectron2's input normalisation, and a C4 detector that learns."""

from __future__ import annotations

import math

import torch

from ovdet.config import load_config
from ovdet.core import get_head
from ovdet.tv import build_model
from ovdet.tv.modeling.c4 import DetectronAnchorGenerator, Res4RoIAlign, Res5BoxHead, ResNetC4

C4_OPTS = ["MODEL.ROI_HEADS.NAME", "Res5ROIHeads", "MODEL.ANCHOR_GENERATOR.SIZES",
           "[[16, 32, 64]]", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "8",
           "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.OVDET.EMBED_DIM", "16"]  # fmt: skip


def test_anchors_are_detectron2s_unrounded_size_major_at_the_fixed_stride():
    from torchvision.models.detection.image_list import ImageList

    gen = DetectronAnchorGenerator([[32, 64]], [[0.5, 1.0]], [16])
    images = ImageList(torch.zeros(1, 3, 33, 50), [(33, 50)])  # not a multiple of 16
    (anchors,) = gen(images, [torch.zeros(1, 8, 3, 4)])
    assert anchors.shape == (3 * 4 * 4, 4)
    w = math.sqrt(32**2 / 0.5)  # detectron2: w = sqrt(area / ratio), h = ratio * w
    cell = torch.tensor(
        [[-w / 2, -w / 4, w / 2, w / 4], [-16, -16, 16, 16],
         [-w, -w / 2, w, w / 2], [-32, -32, 32, 32]]
    )  # fmt: skip
    torch.testing.assert_close(anchors[:4], cell)  # size-major, not rounded
    # (y, x, anchor) order; the stride is 16, not image size // grid size (33 // 3 = 11)
    torch.testing.assert_close(anchors[4:8], cell + torch.tensor([16.0, 0, 16, 0]))
    torch.testing.assert_close(anchors[16:20], cell + torch.tensor([0, 16.0, 0, 16]))


def test_c4_model_parts_and_msra_input():
    cfg = load_config(
        "tiny", [*C4_OPTS, "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STRIDE_IN_1X1", "True",
                 "INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]",
                 "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"],
    )  # fmt: skip
    model = build_model(cfg)
    assert isinstance(model.backbone, ResNetC4) and model.backbone.out_channels == 1024
    assert isinstance(model.roi_heads.box_head, Res5BoxHead)
    assert isinstance(model.roi_heads.box_roi_pool, Res4RoIAlign)
    assert get_head(model).classifier.projection.in_features == 2048
    first = model.backbone.body.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)  # MSRA's stride
    assert model.roi_heads.box_head.res5[0].conv1.stride == (2, 2)
    image = torch.rand(3, 40, 56)
    normalised = model.transform.normalize(image)
    expected = image.flip(0) * 255 - torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    torch.testing.assert_close(normalised, expected)
    torch.testing.assert_close(model.transform.unnormalize(normalised[None])[0], image)
    batched, _ = model.transform([image, torch.rand(3, 35, 50)])
    assert tuple(batched.tensors.shape[-2:]) == (40, 56)  # C4 pads to the batch, not to 32


def test_c4_detector_learns_with_sigmoid_scoring():
    cfg = load_config("tiny", [*C4_OPTS, "MODEL.OVDET.SCORING", "sigmoid",
                               "MODEL.OVDET.BACKGROUND", "fixed",
                               "MODEL.OVDET.BOX_REG_HIDDEN_DIM", "64"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).train()
    get_head(model).set_vocabulary(torch.randn(2, 16))
    images = [torch.full((3, 96, 112), 0.9), torch.full((3, 96, 112), 0.9)]
    images[0][:, 20:60, 30:80] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    images[1][:, 40:90, 10:50] = torch.tensor([0.1, 0.1, 0.9]).view(3, 1, 1)
    targets = [
        {"boxes": torch.tensor([[30.0, 20.0, 80.0, 60.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 40.0, 50.0, 90.0]]), "labels": torch.tensor([2])},
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(12):
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss_dict["loss_text"]))
    assert set(loss_dict) >= {"loss_text", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert losses[-1] < 0.75 * losses[0]  # 3.22 -> 1.93 when written
