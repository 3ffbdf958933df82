"""detectron2's dataset mapper for offline ViLD-image distillation.

The embeddings file (``MODEL.OVDET.DISTILL.EMBEDDINGS_FILE``, written by
``tools/precompute_clip_embeddings.py`` and read by
:func:`ovdet.data.distill_store.load_distill_store`) maps each image id to boxes in original
image pixels and their CLIP embeddings. :class:`OfflineDistillationMapper` carries them through
detectron2's data augmentation (the same transforms as the image), for
:class:`~ovdet.d2.meta_arch.OpenVocabularyRCNN` to hand to the ROI heads.
"""

from __future__ import annotations

from typing import Mapping, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetMapper

from ovdet.utils.errors import DataError

__all__ = ["DistillStore", "OfflineDistillationMapper"]

#: image id -> (boxes Tensor[M, 4] in original pixels, CLIP embeddings Tensor[M, D]).
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
