"""Loading CLIP from one spec string, through open_clip or Hugging Face transformers.

A spec names the model and, optionally, its weights::

    ViT-B-32:openai                  built-in model, pretrained tag (downloaded once by open_clip)
    ViT-B-32:/path/to/weights.pt     built-in model, local checkpoint file
    ViT-B-32                         built-in model, random init
    local-dir:DIR                    DIR/open_clip_config.json (+ weights in DIR if present);
                                     DIR may name a folder shipped in configs (clip/tiny)
    local-dir:DIR:/path/ckpt.pt      custom model config, weights from a checkpoint file
                                     (e.g. one written by open_clip_train)
    hf:/path/to/dir                  transformers CLIPModel/SiglipModel folder (save_pretrained:
                                     config.json, weights, tokenizer, preprocessor_config.json)
    hf:openai/clip-vit-base-patch32  a Hugging Face Hub id (downloaded once by transformers)

Every loaded CLIP satisfies :class:`ClipBackend`: :class:`LoadedClip` (open_clip) and
:class:`HfClip` (transformers).
"""

from ovdet.clip.backend import ClipBackend, load_clip
from ovdet.clip.hf import HfClip
from ovdet.clip.open_clip_backend import LoadedClip
from ovdet.clip.spec import ClipSpec, file_digest

__all__ = ["ClipBackend", "ClipSpec", "HfClip", "LoadedClip", "file_digest", "load_clip"]
