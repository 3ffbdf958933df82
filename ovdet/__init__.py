"""ovdet: open-vocabulary object detection (ViLD / Detic style) on torchvision and detectron2.

Quick use::

    from ovdet import OVDetector
    detector = OVDetector.from_checkpoint("output/model_final.pt")
    results = detector.predict(["street.jpg"], classes=["kite", "umbrella"])
"""

__version__ = "0.1.0"

__all__ = ["OVDetector", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import ovdet` stays light (no torch import until needed).
    if name == "OVDetector":
        from ovdet.api import OVDetector

        return OVDetector
    raise AttributeError(f"module 'ovdet' has no attribute {name!r}")
