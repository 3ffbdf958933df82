"""The torchvision engine's machinery: training, checkpoints, inference, offline distillation.

Modules (imported on use, so that ``import ovdet.tv.engine`` stays light):

* :mod:`ovdet.tv.engine.trainer`: the training loop (``Trainer``; CPU/CUDA, AMP, torchrun DDP,
  exact resume);
* :mod:`ovdet.tv.engine.data_loading`: the training data and its resumable loaders (box and
  image-labelled batches);
* :mod:`ovdet.tv.engine.metrics`: ``metrics.jsonl`` and TensorBoard;
* :mod:`ovdet.tv.engine.checkpoint`: atomic checkpoints of weights, config and training state;
* :mod:`ovdet.tv.engine.build`: builders joining config, data, CLIP and model;
* :mod:`ovdet.tv.engine.inference`: batch inference over a dataset into COCO-format results;
* :mod:`ovdet.tv.engine.precompute`: CLIP embeddings of fixed proposals (offline ViLD-image).
"""
