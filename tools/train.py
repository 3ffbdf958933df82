"""Command-line entry point; see ovdet/cli/train.py."""

from ovdet.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
