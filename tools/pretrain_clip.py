"""Pre-train a CLIP with open_clip_train on caption crops (see ``ovdet.cli.pretrain_clip``)."""

from ovdet.cli.pretrain_clip import main

if __name__ == "__main__":
    raise SystemExit(main())
