"""Video: frames read and written with PyAV (:mod:`~ovdet.video.io`), and detection on the
sampled frames of a video (:mod:`~ovdet.video.detection`)."""
