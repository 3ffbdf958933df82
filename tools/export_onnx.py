"""Command-line entry point; see ovdet/cli/export_onnx.py."""

from ovdet.cli.export_onnx import main

if __name__ == "__main__":
    raise SystemExit(main())
