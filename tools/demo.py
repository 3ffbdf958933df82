"""Command-line entry point; see ovdet/cli/demo.py."""

from ovdet.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
