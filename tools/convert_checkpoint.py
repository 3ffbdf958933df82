"""Rewrite a trusted checkpoint so that it loads safely (see ``ovdet.cli.convert_checkpoint``)."""

from ovdet.cli.convert_checkpoint import main

if __name__ == "__main__":
    raise SystemExit(main())
