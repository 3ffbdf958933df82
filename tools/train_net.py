#!/usr/bin/env python
"""Train or evaluate with detectron2 (see ``ovdet.cli.train_net``; ``--help`` for the flags)."""

from ovdet.cli.train_net import main

if __name__ == "__main__":
    raise SystemExit(main())
