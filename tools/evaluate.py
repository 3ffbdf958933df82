"""Evaluate COCO-format detections: base / novel / all AP (see ``ovdet.cli.evaluate``)."""

from ovdet.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
