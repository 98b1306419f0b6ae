"""`glcic-train`: train a completion model on folders of images, resume it, export it.

glcic-train run --data DIR [DIR ...] --out RUN_DIR [--config FILE.toml] [--preset NAME]
                [--init MODEL] [--resume] [--export NAME] [--sample-image IMAGE --sample-mask MASK]
                [--FIELD VALUE ...]
glcic-train export RUN_DIR (--name NAME | --out FILE) [--force] [--float16] [--terms TEXT]
                   [--notes TEXT] [--context-shift F] [--border-blend telea|mirror]
                   [--data-names TEXT] [--init-name TEXT]
torchrun --nproc-per-node N -m glcic.training.cli run ...   (several GPUs or machines)

The word `run` may be left out (`glcic-train --data DIR --out RUN_DIR`, `glcic-train --out
RUN_DIR --resume`): that was the command's form before it had subcommands, and recipes, scripts
and the notes of runs in progress still use it. Such a command line is parsed by the same
options under the plain name `glcic-train`, so its messages are what they always were.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from glcic.blending import BORDER_BLENDS
from glcic.cli_support import run_command, thread_count
from glcic.devices import DEVICE_CHOICES, resolve_device
from glcic.errors import GlcicError
from glcic.image_io import read_image, read_mask
from glcic.model_file import CompletionModel, load_model
from glcic.model_names import resolve_model
from glcic.threads import set_threads
from glcic.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_latest_checkpoint,
    remove_interrupted_writes,
)
from glcic.training.config import (
    PRESETS,
    TrainConfig,
    add_config_flags,
    build_config,
    flag_overrides,
    user_choices,
)
from glcic.training.export import export_run, export_target
from glcic.training.inherit import SHAPE_FIELDS, inherit_from
from glcic.training.inherit import describe as describe_inheritance
from glcic.training.reporting import close_logging, setup_logging
from glcic.training.trainer import Distributed, Trainer, distributed_from_env

log = logging.getLogger("glcic.training")

PROG = "glcic-train"
RUN_DESCRIPTION = "Train the completion network and its discriminators in the paper's three phases."
EXPORT_DESCRIPTION = "Write a run's completion network into the daemon's model directory."


def build_parser() -> argparse.ArgumentParser:
    """`glcic-train COMMAND ...`: the subcommands `run` and `export`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train the completion network, or export a run's model for the daemon. "
        "The run options may also be given without the word 'run' (the command's older form).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runner = commands.add_parser(
        "run", help="train a new run, or continue one with --resume", description=RUN_DESCRIPTION
    )
    _add_run_arguments(runner)
    runner.set_defaults(handler=_train)
    exporter = commands.add_parser(
        "export",
        help="install a run's model for the daemon, or write it to a file",
        description=EXPORT_DESCRIPTION,
    )
    _add_export_arguments(exporter)
    exporter.set_defaults(handler=_export)
    return parser


def _old_form_parser() -> argparse.ArgumentParser:
    """`glcic-train --data ... --out ...`: the run options without the word `run`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=RUN_DESCRIPTION + " 'glcic-train export RUN_DIR --name NAME' installs a "
        "run's model for the daemon.",
    )
    _add_run_arguments(parser)
    parser.set_defaults(handler=_train)
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    presets = " ".join(f"'{name}': {preset.description}." for name, preset in PRESETS.items())
    parser.add_argument("--data", type=Path, nargs="+", help="image folders (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument(
        "--config", type=Path, help="TOML file with config fields (a [train] table)"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help=f"named config. {presets}")
    parser.add_argument(
        "--init", metavar="MODEL",
        help="model to fine-tune from: a file, a name in the model folder, or 'default'; its "
        "width, crop and hole settings, mean colour and context shift are kept unless you set "
        "them",
    )  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--export", metavar="NAME", help="export the model under NAME at the end")
    parser.add_argument(
        "--stop-at", type=int, metavar="STEP",
        help="stop with a checkpoint after STEP (continue later with --resume)",
    )  # fmt: skip
    parser.add_argument("--device", help=f"{DEVICE_CHOICES} (default: cuda if available, else cpu)")
    parser.add_argument(
        "--threads", type=thread_count, metavar="N",
        help="CPU threads for training (default: torch's, one per core: a training run is "
        "meant to have the machine; give fewer to leave cores to other work)",
    )  # fmt: skip
    parser.add_argument(
        "--sample-image", type=Path, metavar="IMAGE",
        help="your own photo, completed at every sample as 'glcic complete' would (with "
        "--sample-mask; kept when the run is resumed)",
    )  # fmt: skip
    parser.add_argument(
        "--sample-mask", type=Path, metavar="MASK", help="the hole for --sample-image"
    )
    add_config_flags(parser)


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--name", help="install as NAME in the daemon's model directory")
    where.add_argument("--out", type=Path, help="write to this .safetensors file instead")
    parser.add_argument(
        "--force", action="store_true", help="replace a model file that already exists"
    )
    parser.add_argument("--float16", action="store_true", help="store weights as float16")
    parser.add_argument(
        "--terms", default="", help="the training data's terms of use, recorded in the file"
    )
    parser.add_argument("--notes", default="", help="free text recorded in the file")
    parser.add_argument(
        "--context-shift",
        type=_fraction,
        default=None,
        metavar="F",
        help="how far (0-1) completion moves a crop's known colours toward the training mean "
        "before the network runs (default: the --init model's, else 0: colours as they are); "
        "to choose it, export a few values and compare them with glcic-eval on photos the run "
        "trained on",
    )

    parser.add_argument(
        "--border-blend",
        choices=BORDER_BLENDS,
        default=None,
        help="how completion blends a hole at the image edge: pinned to a fast-marching fill "
        "(telea) or left free (mirror). Default: the --init model's; for a run from scratch, "
        "mirror after the poisson-l1 loss (it trains for it), telea otherwise",
    )

    parser.add_argument(
        "--data-names",
        default="",
        metavar="TEXT",
        help="name the training data for the file's readers (default: the run's data folders, "
        "paths that mean something only on this machine)",
    )
    parser.add_argument(
        "--init-name",
        default="",
        metavar="TEXT",
        help="name the model the run was fine-tuned from for the file's readers (default: the "
        "--init name and its path on this machine)",
    )


def _fraction(text: str) -> float:
    """argparse type for a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..1")
    return value


def _export(args: argparse.Namespace) -> int:
    path = export_run(
        args.run_dir,
        args.name,
        "float16" if args.float16 else "float32",
        out=args.out,
        terms=args.terms,
        notes=args.notes,
        context_shift=args.context_shift,
        border_blend=args.border_blend,
        data_names=args.data_names,
        init_name=args.init_name,
        force=args.force,
        warn=lambda message: print(f"{PROG}: warning: {message}", file=sys.stderr),
    )
    print(f"exported {args.run_dir} as {path}")
    return 0


#: Fields a resumed run cannot change: they shape the networks, the data stream it continues or
#: the optimizer state it restores.
FROZEN_ON_RESUME = (
    "width", "image_size", "local_size", "batch_size", "seed", "rescale_min", "rescale_max",
    "hole_min", "hole_max", "freeform_fraction", "edge_hole_fraction", "flip", "optimizer",
    "trainable",
)  # fmt: skip


def _check_resumable(saved: TrainConfig, wanted: TrainConfig, state: dict, world: int) -> None:
    changed = [f for f in FROZEN_ON_RESUME if getattr(saved, f) != getattr(wanted, f)]
    if changed:
        raise GlcicError(
            f"--resume cannot change {', '.join(changed)} (the run was started with "
            + ", ".join(f"{f}={getattr(saved, f)}" for f in changed)
            + "); start a new run, or fine-tune from an export with --init"
        )
    if int(state.get("world_size", 1)) != world:
        raise GlcicError(
            f"the run was checkpointed with {state.get('world_size', 1)} processes; resume it "
            f"with the same number (not {world}), or the data stream would not continue exactly"
        )


def describe_resume_changes(saved: TrainConfig, wanted: TrainConfig) -> str:
    """One log line naming every setting a resume changes, old and new value.

    A resumed run reads its settings from the checkpoint, so a flag given with --resume is the
    only trace of a change of plan (a rate drop, a shorter phase); the log must keep it beside
    the curves it bends.
    """
    old, new = saved.to_dict(), wanted.to_dict()
    changes = [
        f"{name} {old.get(name)!r} -> {value!r}"
        for name, value in new.items()
        if old.get(name) != value
    ]
    if not changes:
        return "resumed with the run's own settings"
    return "resumed with changed settings: " + ", ".join(changes)


def _train(args: argparse.Namespace) -> int:
    distributed = distributed_from_env()
    # A run that fails before its first checkpoint (no data, a bad option, a bad resume) must
    # not leave a folder behind that the next attempt would have to be told about; a folder the
    # user already had is never removed.
    created = distributed.is_main and not args.out.exists()
    setup_logging(args.out, enabled=distributed.is_main)
    if distributed.world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(distributed.local_rank)
        dist.init_process_group(backend)
    try:
        return _train_in_group(args, distributed)
    except BaseException:
        if created and not list_checkpoints(args.out):
            close_logging()
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    finally:
        if dist.is_initialized():
            # The trainer's DDP reducers hold the process group; they died with
            # _train_in_group's frame, and collecting them now destroys the group's gloo threads
            # here rather than at interpreter exit, where a still-joinable thread made the
            # process abort now and then ("terminate called without an active exception").
            gc.collect()
            dist.destroy_process_group()


def _initial_model(args: argparse.Namespace, resuming: bool) -> tuple[CompletionModel | None, str]:
    """The `--init` model of a new run and how to name it; a resumed run has its weights."""
    if args.init is None:
        if args.preset and PRESETS[args.preset].needs_init and not resuming:
            raise GlcicError(
                f"--preset {args.preset} fine-tunes an existing model: add --init MODEL "
                "(a file, a name in the model folder, or 'default')"
            )
        return None, ""
    if resuming:
        log.warning("--init is ignored: a resumed run continues from its own checkpoint")
        return None, ""
    path = resolve_model(args.init)
    label = args.init if str(path) == args.init else f"{args.init} ({path})"
    return load_model(path), label


def _sample_case(args: argparse.Namespace, state: dict | None) -> tuple[Path, Path] | None:
    """The user's own image and mask to complete at every sample, checked now (bad input is a
    one-line error before training, not a failure an hour in); a resumed run keeps its own."""
    if (args.sample_image is None) != (args.sample_mask is None):
        raise GlcicError("--sample-image and --sample-mask go together: give both")
    if args.sample_image is None:
        saved = (state or {}).get("sample_case")
        return (Path(saved[0]), Path(saved[1])) if saved else None
    image, mask = read_image(args.sample_image), read_mask(args.sample_mask)
    if mask.shape != image.shape[:2]:
        raise GlcicError(
            f"--sample-mask is {mask.shape[1]}x{mask.shape[0]} but --sample-image is "
            f"{image.shape[1]}x{image.shape[0]}; they must be the same size"
        )
    if not mask.any():
        raise GlcicError(f"{args.sample_mask}: the mask selects nothing (it is black everywhere)")
    return args.sample_image.resolve(), args.sample_mask.resolve()


def _train_in_group(args: argparse.Namespace, distributed: Distributed) -> int:
    """Build the run (fresh or resumed) and train it; returns the exit status."""
    state = None
    base = None
    if args.resume:
        if not list_checkpoints(args.out):
            raise CheckpointError(f"{args.out}: no checkpoint to resume from")
        state = load_latest_checkpoint(args.out)
        base = state["config"]
    elif list_checkpoints(args.out):
        raise GlcicError(
            f"{args.out} already holds checkpoints: pass --resume to continue that run, "
            "or choose another --out"
        )
    init_model, init_label = _initial_model(args, resuming=state is not None)
    inheritance = inherit_from(init_model.metadata) if init_model is not None else None
    chosen = user_choices(args.config, flag_overrides(args))
    config = build_config(
        args.preset, args.config, flag_overrides(args), base=base,
        inherited=inheritance.values if inheritance is not None else None,
    )  # fmt: skip
    if state is not None:
        saved = TrainConfig(**state["config"])
        _check_resumable(saved, config, state, distributed.world)
        log.info(describe_resume_changes(saved, config))
    data = args.data or ([Path(p) for p in state["data_dirs"]] if state else None)
    if state is not None and args.data and [str(p) for p in args.data] != state["data_dirs"]:
        log.info(
            "resumed on other data: %s -> %s",
            ", ".join(state["data_dirs"]), ", ".join(map(str, args.data)),
        )  # fmt: skip
    if not data:
        raise GlcicError("--data: give at least one image folder")
    if inheritance is not None:
        if config.width != inheritance.values["width"]:
            raise GlcicError(
                f"--init {args.init} has width {inheritance.values['width']:g}; its weights "
                f"cannot train at width {config.width:g} (leave --width out to keep its own)"
            )
        overridden = {
            name: getattr(config, name)
            for name in SHAPE_FIELDS
            if name in chosen and chosen[name] != inheritance.values.get(name, chosen[name])
        }
        log.info(describe_inheritance(init_label, inheritance, overridden, config.to_dict()))
    sample_case = _sample_case(args, state)
    if args.export:
        export_target(args.export, None, force=False)  # refuse now, not after the training
    device = str(resolve_device(args.device)) if args.device else None
    if args.threads is not None:
        log.info("CPU threads: %d (--threads)", set_threads(args.threads))
    trainer = Trainer(
        config, data, args.out, init_model, state, device=device,
        init_label=init_label, sample_case=sample_case,
    )  # fmt: skip
    if distributed.is_main:
        remove_interrupted_writes(args.out)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    status = trainer.train(stop_at=args.stop_at)
    if dist.is_initialized():
        # Finish together: a rank tearing its group down while another still used it made
        # gloo abort that process at exit now and then ("terminate called ...").
        dist.barrier()
    finished = trainer.step >= config.total_steps
    if status == 0 and finished and args.export and distributed.is_main:
        path = export_run(args.out, args.export, warn=log.warning)
        log.info("exported as %s", path)
    return status


def _is_old_form(argv: Sequence[str]) -> bool:
    """Whether the command line starts with a run option rather than a subcommand (or --help)."""
    return bool(argv) and argv[0].startswith("-") and argv[0] not in ("-h", "--help")


def main(argv: Sequence[str] | None = None) -> int:
    """The `glcic-train` command; returns the exit status (0, 2 for user errors, 130 on Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _old_form_parser() if _is_old_form(argv) else build_parser()
    args = parser.parse_args(argv)
    status = run_command(PROG, lambda: args.handler(args))
    if distributed_from_env().world > 1:
        _exit_rank(status)
    return status


def _exit_rank(status: int) -> None:
    """End a torchrun rank without interpreter finalisation.

    By now the process group is destroyed and every file the run writes is closed (checkpoints
    and reports are atomic writes). What remains is interpreter teardown, where gloo's worker
    threads, still joinable, now and then made a rank that had succeeded abort ("terminate
    called without an active exception", exit 1 in torchrun's report). Flushing the logs and
    leaving with `os._exit` makes the exit status the run's own, every time.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
