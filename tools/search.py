"""Command-line entry point; see ovdet/cli/search.py."""

from ovdet.cli.search import main

if __name__ == "__main__":
    raise SystemExit(main())
