"""Exports of a detector's output and of the detector itself.

* :mod:`ovdet.export.datasets`: detections written as training data (a COCO dataset, YOLO
  labels) and region embeddings on disk: auto-annotation.
* :mod:`ovdet.export.onnx`: the detector and the CLIP text tower as ONNX graphs, the
  vocabulary an input (needs the ``deploy`` extra: ``onnx``, ``onnxruntime``).
* :mod:`ovdet.export.runtime`: an onnxruntime detector with the API of
  :class:`ovdet.api.OVDetector`.
"""
