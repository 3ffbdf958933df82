"""``tools/convert_checkpoint.py``: rewrite a TRUSTED checkpoint so that it loads safely, or
convert a Detic checkpoint (``--from detic``).

With ``--from detic``, a checkpoint of Detic's OV-COCO models (detectron2 R50-C4 with a zero-shot
classifier; docs/pretrained_models.md) is read without running code from it and written as a
checkpoint of ovdet's torchvision engine with its config; ``ovdet-infer --checkpoint OUT.pt
--classes "kite,umbrella"`` then runs it with CLIP ViT-B/32 and Detic's prompt "a {}". Other
layouts of Detic's repository get one line saying what they are.

ovdet loads checkpoints with ``torch.load(weights_only=True)``, which unpickles only tensors and
plain Python types, so that opening a file never runs code from it. Checkpoints written by
ovdet before that still load (their NumPy RNG state included); a file holding other pickled
objects is refused with a one-line error naming this command. The command unpickles the file in
full -- which runs any code it holds: use it only on a file whose source you trust -- and writes
the same content as tensors and plain types (NumPy arrays as tensors, the RNG state in the
current format; a top-level entry that cannot be expressed so is dropped, with a warning).

Examples::

    python tools/convert_checkpoint.py old/model_final.pt model_final.pt
    python -m ovdet.cli.convert_checkpoint old/model_final.pt model_final.pt
    python tools/convert_checkpoint.py --from detic BoxSup_OVCOCO_CLIP_R50_1x.pth boxsup.pt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ovdet.cli.common import add_common_arguments, cli_entry, setup_logging
from ovdet.utils.errors import CheckpointError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("ovdet.convert_checkpoint")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``tools/convert_checkpoint.py``."""
    p = argparse.ArgumentParser(
        description="Rewrite a trusted checkpoint (ovdet or detectron2) as tensors and plain "
        "types, which load with torch.load(weights_only=True). Unpickling the input runs any "
        "code it holds: convert only files whose source you trust.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "input",
        help="the checkpoint to convert: a trusted ovdet or detectron2 file (read with "
        "weights_only=False), or with --from detic a Detic .pth (read safely)",
    )
    p.add_argument(
        "--from",
        dest="source",
        choices=("ovdet", "detic"),
        default="ovdet",
        help="what INPUT is: 'ovdet' (an older ovdet or detectron2 checkpoint, rewritten as plain "
        "types) or 'detic' (a Detic OV-COCO R50-C4 checkpoint, converted to an ovdet model "
        "with its config)",
    )
    p.add_argument("output", help="where to write the converted checkpoint (written atomically)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace OUTPUT if it exists (it may be INPUT itself)",
    )
    add_common_arguments(p, progress=False)
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from ovdet.tv.engine.checkpoint import convert_checkpoint, load_checkpoint, read_torch_file
    from ovdet.tv.engine.detic import DETIC_C4_CONFIG, convert_detic_checkpoint

    output = Path(args.output)
    if output.exists() and not args.force:
        raise CheckpointError(f"{output} exists; pass --force to replace it")
    if output.is_dir():
        raise CheckpointError(f"{output} is a folder; name the converted file")
    if args.source == "detic":
        source = Path(args.input)
        convert_detic_checkpoint(
            read_torch_file(source, f"Detic checkpoint {source}"), output, str(source)
        )
        load_checkpoint(output)
        print(f"wrote {output} (Detic R50-C4, config {DETIC_C4_CONFIG})")
        return 0
    notes = convert_checkpoint(args.input, output)
    load_checkpoint(output)  # the check a user would make next: it loads safely
    print(f"wrote {output}" + (f" ({len(notes)} entries dropped)" if notes else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
