"""The `glcic` command: complete an image, import official weights, inspect and list models.

Wherever a model is asked for, a path, a name in the model folder or `default` will do
(`glcic.model_names.resolve_model`).

Every error meant for the user is a `GlcicError`: it is printed as one line on stderr and the
command exits with status 2. Interrupting with Ctrl-C exits with 130 and no traceback (both through
`glcic.cli_support.run_command`, shared by every glcic command).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from glcic.cli_support import (
    add_device_option,
    add_precision_option,
    add_threads_option,
    apply_threads,
    run_command,
)

#: How help texts describe a model argument.
MODEL_HELP = "a model file, a model name in the model folder, or default"


def _complete(args: argparse.Namespace) -> int:
    from glcic.devices import resolve_device
    from glcic.image_io import check_writable_format, read_image, read_mask, write_image
    from glcic.model_file import load_model
    from glcic.model_names import resolve_model
    from glcic.pipeline import CompletionStats, complete

    check_writable_format(args.out)
    device = resolve_device(args.device)
    path = resolve_model(args.model)
    apply_threads(args)
    image = read_image(args.image)
    mask = read_mask(args.mask)
    model = load_model(path, device=device, precision=args.precision)
    large = image.shape[0] * image.shape[1] > 4096 * 4096

    stats = CompletionStats()

    def report(stage: str, fraction: float) -> None:
        # The pipeline lists its crops in `stats` before the network runs.
        regions = len(stats.crops)
        if stage == "network" and (regions > 1 or large):
            print(
                f"glcic: completing {regions} hole region{'s' if regions != 1 else ''}: "
                f"{fraction:.0%}",
                file=sys.stderr,
                flush=True,
            )

    # The decoded image is ours: complete it in place and save one image-sized copy.
    result = complete(
        image, mask, model, blend=args.blend, stats=stats, progress=report, inplace=True
    )
    note = write_image(args.out, result)
    if note:
        print(f"glcic: warning: {note}", file=sys.stderr)
    holes = len(stats.crops)
    print(
        f"wrote {args.out}: {holes} hole region{'s' if holes != 1 else ''} completed in "
        f"{stats.total_seconds:.2f} s (network {stats.network_seconds:.2f} s, "
        f"{model.precision.name})"
    )
    return 0


def _import_t7(args: argparse.Namespace) -> int:
    from glcic.model_file import save_model
    from glcic.torch7 import import_torch7

    model = import_torch7(args.file)
    save_model(model, args.out)
    meta = model.metadata
    print(
        f"wrote {args.out}: width {meta.width:g}, mean "
        f"({', '.join(f'{v:.4f}' for v in meta.mean)}), licence: {meta.provenance.licence}"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from glcic.model_file import load_model
    from glcic.model_listing import describe_model
    from glcic.model_names import resolve_model

    path = resolve_model(args.model)
    # Validated as completion would load it (layout, shapes, dtypes, finite values), so a file
    # that `info` describes is a file that runs.
    meta = load_model(path).metadata
    document = meta.to_json()
    size_bytes = path.stat().st_size
    if args.json:
        document["file"] = str(path)
        document["size_bytes"] = size_bytes
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    print("\n".join(describe_model(path, document, size_bytes)))
    return 0


def _models(args: argparse.Namespace) -> int:
    from glcic.model_listing import folder_models, format_models
    from glcic.paths import models_dir

    if args.folder:
        print(models_dir())
        return 0
    print(f"model folder: {models_dir()}")
    for line in format_models(folder_models()):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glcic", description="Content-aware fill with the Iizuka et al. (2017) network."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    completer = commands.add_parser(
        "complete",
        help="fill the masked region of an image",
        description="Fill the region of IMAGE that MASK selects (white = fill, black = keep, "
        "grey = partly; or the alpha channel of a transparent PNG) and write OUT in the format "
        "its extension names.",
    )
    completer.add_argument("image", type=Path)
    completer.add_argument("mask", type=Path)
    completer.add_argument("out", type=Path)
    completer.add_argument(
        "--model",
        default="default",
        help=f"{MODEL_HELP} (the default: the model folder's default.safetensors if there is "
        "one, else the built-in model)",
    )
    add_device_option(completer, "cpu")
    add_precision_option(completer, "the network runs")
    add_threads_option(completer)
    completer.add_argument(
        "--blend",
        default="poisson",
        choices=["poisson", "none"],
        help="Poisson blending of the fill into its surroundings (default) or none",
    )
    completer.set_defaults(handler=_complete)

    importer = commands.add_parser(
        "import-t7",
        help="convert the authors' Torch7 completion model (.t7) into a glcic model file",
        description="Convert completionnet_places2.t7, completionnet_places2_freeform.t7 or "
        "completionnet_celeba.t7 (which you download yourself; CC BY-NC-SA 4.0) into a "
        "glcic model file.",
    )
    importer.add_argument("file", type=Path, help="the .t7 file")
    importer.add_argument("out", type=Path, help="the model file to write (.safetensors)")
    importer.set_defaults(handler=_import_t7)

    info = commands.add_parser(
        "info",
        help="describe a model: network, blending, data, licence, evaluation",
        description="Describe a model file: its network, how its fills are blended, the data "
        "and steps it was trained with, the terms its weights carry, and the evaluation "
        "stored with it. --json prints the whole metadata for programs.",
    )
    info.add_argument("model", help=MODEL_HELP)
    info.add_argument("--json", action="store_true", help="print the metadata as JSON")
    info.set_defaults(handler=_info)

    lister = commands.add_parser(
        "models",
        help="list the models in the model folder (no daemon needed)",
        description="List the models that --model NAME can name: the files in the model folder "
        "and the built-in default (a folder file named default.safetensors replaces it). "
        "The star marks the model used when none is named.",
    )
    lister.add_argument("--folder", action="store_true", help="print only the model folder's path")
    lister.set_defaults(handler=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command("glcic", lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
