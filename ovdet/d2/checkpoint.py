"""detectron2's checkpointer reading PyTorch files without running code from them."""

from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from ovdet.utils.checkpoint_io import read_torch_file

__all__ = ["OpenVocabularyCheckpointer"]


class OpenVocabularyCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose PyTorch files (``.pth``, ``model_final.pth``, resume
    checkpoints) are read by :func:`ovdet.utils.checkpoint_io.read_torch_file`
    (``torch.load(weights_only=True)``: tensors and plain types only, one-line errors).

    Everything else is detectron2's: URL and ``detectron2://`` resolution, name matching, shape
    checks, saving. ``.pkl`` files (detectron2's model-zoo ImageNet backbones) are still read by
    detectron2 with :mod:`pickle`, which can run code: use them only from a trusted source.
    """

    def _torch_load(self, f: str) -> dict:
        return read_torch_file(
            PathManager.get_local_path(f), label=f"cannot load weights {f}: the file"
        )
