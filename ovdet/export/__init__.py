"""ONNX export of a detector, the vocabulary an input, and its onnxruntime detector.

* :mod:`ovdet.export.onnx`: the detector and the CLIP text tower as ONNX graphs (needs the
  ``deploy`` extra: ``onnx``, ``onnxruntime``).
* :mod:`ovdet.export.runtime`: an onnxruntime detector with the API of
  :class:`ovdet.api.OVDetector`.
"""
