"""`glcic-train`: train a completion model on folders of images, resume it, export it.

glcic-train run --data DIR [DIR ...] --out RUN_DIR [--config FILE.toml] [--preset NAME]
                [--init MODEL] [--resume] [--export NAME] [--FIELD VALUE ...]
glcic-train export RUN_DIR (--name NAME | --out FILE) [--float16] [--terms TEXT] [--notes TEXT]
                   [--context-shift F]
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
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from glcic.cli_support import run_command
from glcic.errors import GlcicError
from glcic.model_file import load_model
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
)
from glcic.training.export import export_run
from glcic.training.reporting import setup_logging
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
    presets = "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
    parser.add_argument("--data", type=Path, nargs="+", help="image folders (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument(
        "--config", type=Path, help="TOML file with config fields (a [train] table)"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help=f"named config. {presets}")
    parser.add_argument("--init", type=Path, help="model file to fine-tune from")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--export", metavar="NAME", help="export the model under NAME at the end")
    parser.add_argument(
        "--stop-at", type=int, metavar="STEP",
        help="stop with a checkpoint after STEP (continue later with --resume)",
    )  # fmt: skip
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_config_flags(parser)


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--name", help="install as NAME in the daemon's model directory")
    where.add_argument("--out", type=Path, help="write to this .safetensors file instead")
    parser.add_argument("--float16", action="store_true", help="store weights as float16")
    parser.add_argument(
        "--terms", default="", help="the training data's terms of use, recorded in the file"
    )
    parser.add_argument("--notes", default="", help="free text recorded in the file")
    parser.add_argument(
        "--context-shift",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="how far (0-1) completion moves a crop's known colours toward the training mean "
        "before the network runs (default 0: colours as they are); to choose it, export a few "
        "values and compare them with glcic-eval on photos the run trained on",
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
    )
    print(f"exported {args.run_dir} as {path}")
    return 0


#: Fields a resumed run cannot change: they shape the networks or the data stream it continues.
FROZEN_ON_RESUME = (
    "width", "image_size", "local_size", "batch_size", "seed", "rescale_min", "rescale_max",
    "hole_min", "hole_max", "freeform_fraction", "edge_hole_fraction", "flip",
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


def _train(args: argparse.Namespace) -> int:
    distributed = distributed_from_env()
    setup_logging(args.out, enabled=distributed.is_main)
    if distributed.world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(distributed.local_rank)
        dist.init_process_group(backend)
    try:
        return _train_in_group(args, distributed)
    finally:
        if dist.is_initialized():
            # The trainer's DDP reducers hold the process group; they died with
            # _train_in_group's frame, and collecting them now destroys the group's gloo threads
            # here rather than at interpreter exit, where a still-joinable thread made the
            # process abort now and then ("terminate called without an active exception").
            gc.collect()
            dist.destroy_process_group()


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
    config = build_config(args.preset, args.config, flag_overrides(args), base=base)
    if state is not None:
        _check_resumable(TrainConfig(**state["config"]), config, state, distributed.world)
    data = args.data or ([Path(p) for p in state["data_dirs"]] if state else None)
    if not data:
        raise GlcicError("--data: give at least one image folder")
    init_model = None
    if args.init is not None and state is None:
        init_model = load_model(args.init)
        if init_model.metadata.width != config.width:
            raise GlcicError(
                f"--init model has width {init_model.metadata.width:g} but the config "
                f"asks for {config.width:g}; pass --width {init_model.metadata.width:g}"
            )
    trainer = Trainer(config, data, args.out, init_model, state, device=args.device)
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
        path = export_run(args.out, args.export)
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
