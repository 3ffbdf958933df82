"""Auto-annotation: a detector's output written as training data for closed-set detectors.

* :mod:`ovdet.annotate.datasets`: a COCO dataset, YOLO labels, and region embeddings on disk.
"""
