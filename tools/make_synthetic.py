"""Generate the synthetic open-vocabulary dataset (see ``ovdet.cli.make_synthetic``)."""

from ovdet.cli.make_synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
