"""The paper's three-phase training of the completion network and the context discriminator.

Phase 1 (completion): the completion network alone, on the MSE over hole pixels.
Phase 2 (discriminator): the discriminator alone: real crops with a random local patch against
completed crops (network output composited with the known pixels) with the patch on the hole.
Phase 3 (joint): both, alternating: a discriminator step, then a completion step on
MSE + alpha * GAN loss. During the completion step the discriminator's parameters do not require
gradients and its raw module is called, so no gradient reaches or lingers in them.

Runs on one CPU or GPU, or under `torchrun` with DistributedDataParallel (NCCL on GPUs, gloo on
CPU); only rank 0 writes. Everything runs channels_last, in the config's precision: under `auto`,
bf16 autocast on CUDA and on CPUs where it is measured faster (AMX Xeons: 3.5-4x), float32
elsewhere (on AVX2-only CPUs bf16 is about 30x slower); see `glcic.precision`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from glcic.atomic import atomic_write_bytes
from glcic.errors import GlcicError
from glcic.image_io import read_image, read_mask
from glcic.model_file import CompletionModel
from glcic.networks import (
    CompletionNetwork,
    ContextDiscriminator,
    prepare_input,
    train_only,
)
from glcic.precision import resolve_precision
from glcic.training.checkpoint import (
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from glcic.training.config import TrainConfig, border_blend_for
from glcic.training.data import (
    DataError,
    EpochStream,
    HoleDataset,
    find_images,
    mean_colour,
    usable_images,
)
from glcic.training.live_eval import (
    LiveScore,
    append_score,
    read_scores,
    score,
    split_holdout,
)
from glcic.training.losses import (
    RECONSTRUCTION_LOSSES,
    hole_mse,
    hole_poisson_l1,
    hole_weave_excess,
    poisson_blended,
    spectral_excess,
)
from glcic.training.plot import write_plot
from glcic.training.progress import PhaseSpeeds, Progress, duration
from glcic.training.reporting import PROGRESS_LINE, MetricsWriter, elapsed_from_metrics
from glcic.training.samples import (
    OWN_COLUMNS,
    TRAINING_COLUMNS,
    encode_png,
    grid,
    own_row,
    pipeline_model,
    training_rows,
)

log = logging.getLogger("glcic.training")

PHASES = ("completion", "discriminator", "joint")
SAMPLE_COUNT = 4


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    return Distributed(
        int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    )


def crop_patches(images: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """The size x size patch at each image's (x, y) corner."""
    return torch.stack(
        [
            image[:, y : y + size, x : x + size]
            for image, (x, y) in zip(images, corners.tolist(), strict=True)
        ]
    )


def make_optimizer(name: str, parameters: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The config's optimizer (`OPTIMIZERS`) over `parameters`."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    return torch.optim.Adadelta(parameters, lr=lr)


class Trainer:
    """Owns the networks, optimizers, data stream and run directory of one training run."""

    def __init__(
        self,
        config: TrainConfig,
        data_dirs: list[Path],
        run_dir: Path,
        init_model: CompletionModel | None = None,
        resume_state: dict[str, Any] | None = None,
        device: str | None = None,
        *,
        init_label: str = "",
        sample_case: tuple[Path, Path] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.data_dirs = data_dirs
        self.dist = distributed_from_env()
        self.device = torch.device(device or self._default_device())
        self.use_cuda = self.device.type == "cuda"
        self.precision = resolve_precision(config.precision, self.device, "training")
        self.stop_signal: int | None = None
        torch.manual_seed(config.seed)  # same initial weights on every rank

        paths = find_images(data_dirs)
        usable, skipped = usable_images(paths)
        if not usable:
            raise DataError(
                f"no usable image in {', '.join(map(str, data_dirs))} "
                f"({len(paths)} image files found, {len(skipped)} unreadable)"
            )
        log.info("data: %d images, %d skipped as unreadable", len(usable), len(skipped))
        self.holdout = self._held_out(usable, resume_state)
        if self.holdout:
            held = set(self.holdout)
            usable = [path for path in usable if path not in held]
            log.info(
                "evaluation: %d photo%s held out, never trained on (%s ... %s)",
                len(self.holdout), "s" if len(self.holdout) > 1 else "",
                self.holdout[0].name, self.holdout[-1].name,
            )  # fmt: skip
        self.image_paths = usable
        self.sample_case = sample_case

        self.completion = CompletionNetwork(config.width).to(self.device)
        self.discriminator = ContextDiscriminator(
            config.image_size, config.local_size, config.width
        ).to(self.device)
        # channels_last: faster convolutions on GPUs and, measured here, on CPUs too (+46 %).
        self.completion.to(memory_format=torch.channels_last)
        self.discriminator.to(memory_format=torch.channels_last)
        trained = train_only(self.completion, config.trainable)
        self.optimizer_c = make_optimizer(config.optimizer, trained, config.lr)
        self.optimizer_d = make_optimizer(
            config.optimizer, list(self.discriminator.parameters()), config.lr
        )
        self.step = 0
        self.init_source = ""
        self.init_origin = ""
        self.init_licence = ""
        self.init_context_shift = 0.0
        self.init_border_blend: str | None = None
        self.elapsed_before = 0.0
        self.speeds = PhaseSpeeds()
        self.metrics: MetricsWriter | None = None
        self.progress: Progress | None = None
        self.last_sample_time = time.monotonic()
        self.first_score: LiveScore | None = None
        if resume_state is not None:
            self._restore(resume_state)
        else:
            if init_model is not None:
                self.completion.load_state_dict(init_model.network.state_dict())
                self.mean = tuple(init_model.metadata.mean)
                self.init_source = init_label or "a model file"
                self.init_origin = init_model.metadata.provenance.source
                self.init_licence = init_model.metadata.provenance.licence
                self.init_context_shift = init_model.metadata.context_shift
                self.init_border_blend = init_model.metadata.border_blend
                log.info("fine-tuning from %s", self.init_source)
            else:
                self.mean = mean_colour(usable, config.mean_images, config.seed)
                log.info("mean colour of the data: %s", ", ".join(f"{v:.4f}" for v in self.mean))
        self.mean_tensor = torch.tensor(self.mean, dtype=torch.float32, device=self.device)

        self.completion_ddp: nn.Module = self.completion
        self.discriminator_ddp: nn.Module = self.discriminator
        if self.dist.world > 1:
            ids = [self.device.index] if self.use_cuda else None
            self.completion_ddp = DistributedDataParallel(self.completion, device_ids=ids)
            self.discriminator_ddp = DistributedDataParallel(self.discriminator, device_ids=ids)
        if config.compile:
            self.completion_ddp = torch.compile(self.completion_ddp)
            self.discriminator_ddp = torch.compile(self.discriminator_ddp)
        self.dataset = HoleDataset(usable, config)
        log.info("precision: %s", self.precision.describe())

    def _held_out(self, usable: list[Path], state: dict[str, Any] | None) -> list[Path]:
        """The photos evaluation uses and training never sees (`glcic.training.live_eval`)."""
        if state is not None:
            holdout = [Path(p) for p in state.get("holdout", [])]
            if self.config.eval_every and not holdout:
                raise GlcicError(
                    "--eval-every: this run was started without it, so it holds no photos out "
                    "of training; score an export with glcic-eval instead"
                )
            return holdout
        if not self.config.eval_every:
            return []
        _, holdout = split_holdout(usable, self.config.eval_photos)
        if not holdout:
            log.warning(
                "evaluation off: %d photos are too few to hold some out of training",
                len(usable),
            )
        return holdout

    def _default_device(self) -> str:
        if torch.cuda.is_available():
            return f"cuda:{self.dist.local_rank}"
        return "cpu"

    # -- state -----------------------------------------------------------------------------

    def _restore(self, state: dict[str, Any]) -> None:
        self.completion.load_state_dict(state["completion"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer_c.load_state_dict(state["optimizer_completion"])
        self.optimizer_d.load_state_dict(state["optimizer_discriminator"])
        # An optimizer's saved state carries its learning rate; the resumed config's must win,
        # or `--resume --lr 0.1` would do nothing (train_step applies lr_drop_step on top).
        for optimizer in (self.optimizer_c, self.optimizer_d):
            for group in optimizer.param_groups:
                group["lr"] = self.config.lr
        self.step = int(state["step"])
        self.mean = tuple(state["mean"])
        self.init_source = state.get("init_source", "")
        self.init_origin = state.get("init_origin")
        self.init_licence = state.get("init_licence", "")
        self.init_context_shift = float(state.get("init_context_shift", 0.0))
        self.init_border_blend = state.get("init_border_blend")
        self.sample_case = self.sample_case or (
            (Path(state["sample_case"][0]), Path(state["sample_case"][1]))
            if state.get("sample_case")
            else None
        )
        self.speeds = PhaseSpeeds(state.get("phase_seconds_per_step"))
        self.elapsed_before = (
            float(state["elapsed_s"])
            if "elapsed_s" in state
            else elapsed_from_metrics(self.run_dir, self.step)
        )
        restore_rng_state(state["rng"])
        log.info("resumed at step %d (%s phase)", self.step, self.config.phase_at(self.step))

    def state(self) -> dict[str, Any]:
        progress = self.progress
        extra: dict[str, Any] = {}
        if self.init_origin is not None:  # None: a resumed run from before it was recorded
            extra["init_origin"] = self.init_origin
        if self.init_border_blend is not None:
            extra["init_border_blend"] = self.init_border_blend
        if self.sample_case is not None:
            extra["sample_case"] = [str(p) for p in self.sample_case]
        return {
            "config": self.config.to_dict(),
            "phase": self.config.phase_at(self.step),
            "mean": list(self.mean),
            "data_dirs": [str(p) for p in self.data_dirs],
            "init_source": self.init_source,
            "init_licence": self.init_licence,
            "init_context_shift": self.init_context_shift,
            **extra,
            "holdout": [str(p) for p in self.holdout],
            "elapsed_s": progress.elapsed() if progress is not None else self.elapsed_before,
            "phase_seconds_per_step": dict(self.speeds.seconds),
            "completion": self.completion.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_completion": self.optimizer_c.state_dict(),
            "optimizer_discriminator": self.optimizer_d.state_dict(),
            "rng": rng_state(),
            "world_size": self.dist.world,
        }

    def checkpoint(self, verify_ranks: bool = True) -> None:
        if verify_ranks and self.dist.world > 1:
            self._check_ranks_agree()
        if self.dist.is_main:
            path = save_checkpoint(
                self.run_dir, self.step, self.state(), self.config.keep_checkpoints
            )
            log.info("checkpoint %s", path.name)

    def _check_ranks_agree(self) -> None:
        """All ranks must hold the same weights; a checkpoint from a diverged rank is worthless.

        BatchNorm running statistics are each rank's own (DDP re-broadcasts rank 0's at the next
        forward), so rank 0's are broadcast first, as DDP would, and then everything is compared.
        """
        for network in (self.completion, self.discriminator):
            for buffer in network.buffers():
                dist.broadcast(buffer.data, src=0)
        digest = hashlib.sha256()
        for tensor in [
            *self.completion.state_dict().values(),
            *self.discriminator.state_dict().values(),
        ]:
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        mine = torch.tensor(
            list(digest.digest()[:8]), dtype=torch.int64, device=self._comm_device()
        )
        gathered = [torch.zeros_like(mine) for _ in range(self.dist.world)]
        dist.all_gather(gathered, mine)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise RuntimeError("ranks hold different weights; refusing to checkpoint")
        if self.dist.is_main:
            log.info("parameters identical across %d ranks", self.dist.world)

    def _comm_device(self) -> torch.device:
        return self.device if self.use_cuda else torch.device("cpu")

    # -- steps -----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast(self.device)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        images = batch["image"].to(self.device, non_blocking=True).float().div_(255.0)
        masks = batch["mask"].to(self.device, non_blocking=True).float()
        images = images.contiguous(memory_format=torch.channels_last)
        masks = masks.contiguous(memory_format=torch.channels_last)
        return images, masks, batch["hole_box"], batch["real_box"]

    def _discriminator_step(self, images, completed, hole_box, real_box) -> torch.Tensor:
        """One update of the discriminator on real crops and detached completed crops."""
        size = self.config.local_size
        completed = completed.detach()
        both = torch.cat([images, completed])
        patches = torch.cat(
            [crop_patches(images, real_box, size), crop_patches(completed, hole_box, size)]
        )
        labels = torch.cat([torch.ones(len(images)), torch.zeros(len(images))]).to(self.device)
        with self._autocast():
            logits = self.discriminator_ddp(both, patches).float()
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.optimizer_d.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_d.step()
        self.optimizer_d.zero_grad(set_to_none=True)  # nothing lingers into the next step
        return loss.detach()

    def _adversarial_loss(self, completed: torch.Tensor, hole_box: torch.Tensor) -> torch.Tensor:
        """How real the discriminator finds the completed crops; gradients reach only the input."""
        patches = crop_patches(completed, hole_box, self.config.local_size)
        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                logits = self.discriminator(completed, patches).float()
        finally:
            self.discriminator.requires_grad_(True)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def _shown(
        self, output: torch.Tensor, images: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """What the discriminators judge inside the hole (`TrainConfig.adversarial_input`)."""
        if self.config.adversarial_input == "blended":
            return poisson_blended(output, images, masks)
        return output

    @staticmethod
    def _completed(images: torch.Tensor, shown: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The crop with its hole filled by `shown`."""
        return images * (1 - masks) + shown * masks

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step of the phase the current step belongs to; returns detached losses."""
        images, masks, hole_box, real_box = self._to_device(batch)
        phase = self.config.phase_at(self.step)
        network_input = prepare_input(images, masks, self.mean_tensor)
        losses: dict[str, torch.Tensor] = {}
        if phase == "discriminator":
            with torch.no_grad():
                with self._autocast():
                    output = self.completion_ddp(network_input).float()
                completed = self._completed(images, self._shown(output, images, masks), masks)
            losses["loss_d"] = self._discriminator_step(images, completed, hole_box, real_box)
            return losses
        with self._autocast():
            output = self.completion_ddp(network_input).float()
        shown = self._shown(output, images, masks) if phase == "joint" else output
        reconstruction = RECONSTRUCTION_LOSSES[self.config.reconstruction_loss]
        if reconstruction is hole_poisson_l1 and shown is not output:
            loss = hole_poisson_l1(output, images, masks, blended=shown)  # one solve, not two
        else:
            loss = reconstruction(output, images, masks)
        if reconstruction is hole_mse:
            mse = loss.detach()
        else:
            with torch.no_grad():
                mse = hole_mse(output, images, masks)
        if phase == "joint":
            completed = self._completed(images, shown, masks)
            losses["loss_d"] = self._discriminator_step(images, completed, hole_box, real_box)
            adversarial = self._adversarial_loss(completed, hole_box)
            loss = loss + self.config.alpha_at(self.step) * adversarial
            losses["loss_adv"] = adversarial.detach()
            if self.config.weave_weight:
                weave = hole_weave_excess(output, images, masks)
                loss = loss + self.config.weave_weight * weave
                losses["loss_weave"] = weave.detach()
            if self.config.spectrum_weight:
                spectrum = spectral_excess(shown, images, masks)
                loss = loss + self.config.spectrum_weight * spectrum
                losses["loss_spectrum"] = spectrum.detach()
        for group in self.optimizer_c.param_groups:
            group["lr"] = self.config.completion_lr_at(self.step)
        self.optimizer_c.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_c.step()
        losses["loss_mse"] = mse
        return losses

    # -- loop ------------------------------------------------------------------------------

    def _loader(self) -> DataLoader:
        stream = EpochStream(
            len(self.dataset), self.config.seed, self.dist.rank, self.dist.world,
            start=self.step * self.config.batch_size,
        )  # fmt: skip
        return DataLoader(
            self.dataset,
            batch_size=self.config.batch_size,
            sampler=stream,
            num_workers=self.config.workers,
            pin_memory=self.use_cuda,
            persistent_workers=self.config.workers > 0,
            prefetch_factor=4 if self.config.workers > 0 else None,
        )

    def _install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: Any) -> None:
            self.stop_signal = signum
            # A signal sent to the whole process group (systemd, SLURM, a terminal) also ends
            # the DataLoader workers; PyTorch's SIGCHLD handler would then raise in the middle
            # of the final checkpoint. We are stopping anyway: let the workers go quietly.
            if hasattr(signal, "SIGCHLD"):
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def _pipeline_model(self) -> CompletionModel:
        return pipeline_model(
            self.completion,
            self.mean,
            self.config,
            self.init_context_shift,
            border_blend_for(self.config, self.init_border_blend),
        )

    @contextlib.contextmanager
    def _inference(self):
        """Eval mode, no gradients, and the global RNG left as it was: what samples and
        evaluations do must not change a single number of the training they interrupt."""
        was_training = self.completion.training
        self.completion.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                yield
        finally:
            self.completion.train(was_training)

    def write_samples(self) -> None:
        """samples/step-N.png (and step-N-own.png for --sample-image), labelled."""
        if not self.dist.is_main:
            return
        batch = [self.dataset[(0, index % len(self.dataset))] for index in range(SAMPLE_COUNT)]
        images = torch.stack([b["image"] for b in batch]).float().div(255).to(self.device)
        masks = torch.stack([b["mask"] for b in batch]).float().to(self.device)
        phase = self.config.phase_at(max(0, self.step - 1)) if self.step else "start"
        title = f"step {self.step:,} of {self.config.total_steps:,} ({phase})"
        with self._inference():
            output = self.completion(prepare_input(images, masks, self.mean_tensor)).float()
            model = self._pipeline_model()
            rows = training_rows(model, images.cpu(), masks.cpu(), output.cpu())
            picture = grid(title + ": training crops", TRAINING_COLUMNS, rows)
            own = None
            if self.sample_case is not None:
                image, mask = read_image(self.sample_case[0]), read_mask(self.sample_case[1])
                own_title = f"{title}: {self.sample_case[0].name}"
                own = grid(own_title, OWN_COLUMNS, [own_row(model, image, mask)])
        folder = self.run_dir / "samples"
        atomic_write_bytes(folder / f"step-{self.step:09d}.png", encode_png(picture))
        if own is not None:
            atomic_write_bytes(folder / f"step-{self.step:09d}-own.png", encode_png(own))
        if self.metrics is not None:
            self.metrics.add_image("samples/training crops", picture, self.step)
            if own is not None:
                self.metrics.add_image("samples/your image", own, self.step)
        self.last_sample_time = self.progress.clock() if self.progress else time.monotonic()
        write_plot(self.run_dir)

    def evaluate_holdout(self) -> None:
        """Score the held-out photos now (`glcic.training.live_eval`) and log it."""
        if not (self.dist.is_main and self.holdout and self.config.eval_every):
            return
        with self._inference():
            result = score(self._pipeline_model(), self.holdout, self.step)
        append_score(self.run_dir, result)
        if self.first_score is None or self.first_score.step >= result.step:
            self.first_score = result
        since = (
            f" (step {self.first_score.step:,}: L1 {self.first_score.l1:.4f}, "
            f"PSNR {self.first_score.psnr:.2f} dB)"
            if self.first_score.step < result.step
            else ""
        )
        log.info(
            "held-out evaluation at step %d on %d photo%s: %s%s",
            self.step, result.photos, "s" if result.photos > 1 else "", result.describe(), since,
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.add_scalars(
                {"eval/psnr": result.psnr, "eval/l1": result.l1, "eval/detail": result.detail},
                self.step,
            )
        write_plot(self.run_dir)

    def train(self, stop_at: int | None = None) -> int:
        """Run to `total_steps` (or `stop_at`, checkpointing there, to resume later).

        Returns 0, or 128 + signal number if a signal stopped it (after a checkpoint).
        """
        config = self.config
        end = config.total_steps if stop_at is None else min(stop_at, config.total_steps)
        self.completion.train()
        self.discriminator.train()
        self._install_signal_handlers()
        main = self.dist.is_main
        self.metrics = MetricsWriter(self.run_dir, self.step) if main else None
        self.progress = (
            Progress(config, self.step, end, self.speeds, elapsed_before=self.elapsed_before)
            if main
            else None
        )
        earlier = read_scores(self.run_dir) if main else []
        self.first_score = LiveScore.from_row(earlier[0]) if earlier else None
        log.info(
            "training to step %d on %s (%d process%s), batch %d per process",
            config.total_steps, self.device, self.dist.world,
            "es" if self.dist.world > 1 else "", config.batch_size,
        )  # fmt: skip
        if main and self.step < end:
            # What the run starts from, at once (a resumed run has them already).
            if not (self.run_dir / "samples" / f"step-{self.step:09d}.png").is_file():
                self.write_samples()
            if not any(int(row["step"]) == self.step for row in read_scores(self.run_dir)):
                self.evaluate_holdout()
        sums: dict[str, torch.Tensor] = {}
        line_sums: dict[str, torch.Tensor] = {}
        counted = line_counted = 0
        window_start = line_start = time.monotonic()
        shown: dict[str, float] = {}
        first_step = True
        batches: Any = None
        try:
            batches = iter(self._loader())
            while self.step < end and self.stop_signal is None:
                step_start = time.monotonic()
                try:
                    batch = next(batches)
                except (RuntimeError, EOFError, OSError):
                    # Workers killed by the same signal surface as a RuntimeError ("worker
                    # exited unexpectedly"), or as EOFError / ConnectionError while a batch's
                    # shared memory was being handed over.
                    if self.stop_signal is None:
                        raise
                    break  # no batch, no step
                phase = config.phase_at(self.step)
                losses = self.train_step(batch)
                self.step += 1
                counted += 1
                line_counted += 1
                if not first_step:  # the first step of a session includes warming up
                    self.speeds.record(phase, time.monotonic() - step_start)
                first_step = False
                for key, value in losses.items():  # summed on device: no host sync per step
                    sums[key] = sums.get(key, 0) + value
                    line_sums[key] = line_sums.get(key, 0) + value
                progress = self.progress
                if progress is not None and progress.line_due(self.step):
                    now = time.monotonic()
                    rate = (
                        line_counted
                        * config.batch_size
                        * self.dist.world
                        / max(now - line_start, 1e-9)
                    )
                    shown = {k: float(v) / line_counted for k, v in line_sums.items()}
                    log.info(progress.line(self.step, phase, shown, rate), extra=PROGRESS_LINE)
                    line_sums, line_counted, line_start = {}, 0, now
                if progress is not None:
                    per_step = self.speeds.per_step(phase)
                    rate = config.batch_size * self.dist.world / per_step if per_step else 0.0
                    progress.bar(self.step, phase, shown, rate)
                if self.step % config.log_every == 0 or self.step == config.total_steps:
                    now = time.monotonic()
                    rate = (
                        counted
                        * config.batch_size
                        * self.dist.world
                        / max(now - window_start, 1e-9)
                    )
                    means = {k: float(v) / counted for k, v in sums.items()}
                    if self.metrics is not None and progress is not None:
                        self.metrics.write({
                            "step": self.step, "phase": phase, "images_per_s": f"{rate:.2f}",
                            "elapsed_s": f"{progress.elapsed():.1f}",
                            **{k: f"{means.get(k, float('nan')):.6f}" if k in means else ""
                               for k in ("loss_mse", "loss_d", "loss_adv")},
                        })  # fmt: skip
                    sums, counted, window_start = {}, 0, now
                if self._sample_due():
                    self.write_samples()
                if config.eval_every and self.step % config.eval_every == 0:
                    self.evaluate_holdout()
                if self.step % config.checkpoint_every == 0 and self.step < end:
                    self.checkpoint()
        finally:
            if self.progress is not None:
                self.progress.close()
            if self.metrics is not None:
                self.metrics.close()
        if self.stop_signal is not None:
            batches = None  # shuts the remaining loader workers down before the checkpoint
            self.checkpoint(verify_ranks=False)
            log.warning(
                "stopped by signal %d at step %d, checkpoint saved; continue this run with: "
                "glcic-train run --out %s --resume",
                self.stop_signal, self.step, self.run_dir,
            )  # fmt: skip
            return 128 + self.stop_signal
        self.checkpoint()
        if self.step < config.total_steps:
            log.info(
                "stopped at step %d as asked; continue with: glcic-train run --out %s --resume",
                self.step, self.run_dir,
            )  # fmt: skip
            return 0
        self.write_samples()
        if config.eval_every and self.step % config.eval_every:
            self.evaluate_holdout()
        log.info(
            "finished at step %d after %s of training",
            self.step, duration(self.progress.elapsed() if self.progress else 0.0),
        )  # fmt: skip
        return 0

    def _sample_due(self) -> bool:
        """A sample every `sample_every` steps, and when `sample_minutes` have passed."""
        if self.step % self.config.sample_every == 0:
            return True
        if not self.config.sample_minutes or self.progress is None:
            return False
        return self.progress.clock() - self.last_sample_time >= 60 * self.config.sample_minutes
