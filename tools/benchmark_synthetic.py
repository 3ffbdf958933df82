"""Command-line entry point; see ovdet/cli/benchmark_synthetic.py."""

from ovdet.cli.benchmark_synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
