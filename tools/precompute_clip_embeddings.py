"""Command-line entry point; see ovdet/cli/precompute_clip_embeddings.py."""

from ovdet.cli.precompute_clip_embeddings import main

if __name__ == "__main__":
    raise SystemExit(main())
