"""Command-line entry point; see ovdet/cli/infer.py."""

from ovdet.cli.infer import main

if __name__ == "__main__":
    raise SystemExit(main())
