"""Offline ViLD-image distillation for detectron2: precomputed CLIP region embeddings.

The embeddings file (``MODEL.OVDET.DISTILL.EMBEDDINGS_FILE``, written by
``tools/precompute_clip_embeddings.py`` and read by :func:`ovdet.data.distill_store.
load_distill_store`) maps each image id to boxes in original image pixels and their CLIP
embeddings. :class:`OfflineDistillationMapper` carries them through detectron2's data
augmentation (the same transforms as the image); :class:`OpenVocabularyRCNN` hands them to the
ROI heads, which compute ViLD-image's L1 loss on them.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetMapper
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from ovdet.utils.errors import DataError

__all__ = ["OfflineDistillationMapper", "OpenVocabularyRCNN"]

logger = logging.getLogger(__name__)

DistillStore = Mapping[int, Tuple[torch.Tensor, torch.Tensor]]


class OfflineDistillationMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` that also maps the precomputed distillation regions.

    Adds ``distill_boxes`` Tensor[M, 4] (x1, y1, x2, y2 in pixels of the augmented image) and
    ``distill_embeddings`` Tensor[M, D] to each training sample; boxes that the augmentation
    leaves smaller than a pixel are dropped with their embeddings.

    Args:
        store: image id -> (boxes Tensor[M, 4] in original pixels, embeddings Tensor[M, D]).
        **kwargs: the arguments of ``DatasetMapper`` (or a config, as ``DatasetMapper(cfg,
            is_train, store=...)``).
    """

    @configurable
    def __init__(self, is_train: bool = True, *, store: DistillStore, **kwargs) -> None:
        super().__init__(is_train, **kwargs)
        self.store = store

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True, *, store: DistillStore) -> dict:
        ret = super().from_config(cfg, is_train)
        ret["store"] = store
        return ret

    def _transform_annotations(self, dataset_dict: dict, transforms, image_shape) -> None:
        super()._transform_annotations(dataset_dict, transforms, image_shape)
        image_id = dataset_dict.get("image_id")
        if image_id not in self.store:
            raise DataError(
                f"image {image_id} ({dataset_dict.get('file_name')}) has no entry in the "
                "distillation embeddings file (MODEL.OVDET.DISTILL.EMBEDDINGS_FILE)"
            )
        boxes, embeddings = self.store[image_id]
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if boxes.shape[0]:
            boxes = transforms.apply_box(boxes).astype(np.float32)
        h, w = image_shape
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        dataset_dict["distill_boxes"] = torch.from_numpy(boxes[keep])
        dataset_dict["distill_embeddings"] = torch.as_tensor(embeddings).float()[
            torch.from_numpy(keep)
        ]


@META_ARCH_REGISTRY.register()
class OpenVocabularyRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` that passes precomputed distillation regions to the ROI heads.

    Identical to ``GeneralizedRCNN`` except in training with ``MODEL.OVDET.DISTILL.MODE
    "offline"``, where each input's ``distill_boxes`` and ``distill_embeddings`` (from
    :class:`OfflineDistillationMapper`) reach
    :meth:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads.offline_targets`, and for image-labelled
    batches (weak supervision: inputs with ``image_labels``, see :mod:`ovdet.d2.weak`), which
    train only the head's image-label and caption losses
    (:meth:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads.weak_losses`): the RPN learns nothing
    from images without boxes, as in Detic.
    """

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        heads = self.roi_heads
        if self.training and "image_labels" in batched_inputs[0]:
            return self._image_labelled_forward(batched_inputs)
        head = getattr(heads, "head", None)
        if not self.training or head is None or not head.distills_offline:
            return super().forward(batched_inputs)
        if "distill_boxes" not in batched_inputs[0]:
            raise DataError(
                "offline distillation needs 'distill_boxes' and 'distill_embeddings' in the "
                "inputs; train with OfflineDistillationMapper (OpenVocabularyTrainer uses it)"
            )
        targets = [
            (x["distill_boxes"].to(self.device), x["distill_embeddings"].to(self.device))
            for x in batched_inputs
        ]
        with heads.offline_targets(targets):
            return super().forward(batched_inputs)

    def _image_labelled_forward(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> dict:
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        captions = None
        if all("caption_embedding" in x for x in batched_inputs):
            captions = torch.stack([x["caption_embedding"] for x in batched_inputs]).to(self.device)
        losses = self.roi_heads.weak_losses(
            features,
            proposals,
            [x["image_labels"].to(self.device) for x in batched_inputs],
            captions,
        )
        # Zero terms keep every parameter in the graph (DDP without find_unused_parameters):
        # the RPN, the box regressor and the background learn nothing from images without boxes.
        unused = sum(v for v in proposal_losses.values()) + sum(
            p.sum() for p in self.roi_heads.box_predictor.head.parameters()
        )
        losses["loss_image_label"] = losses["loss_image_label"] + 0.0 * unused
        return losses
