"""Training configuration: one dataclass whose defaults are the paper's, plus named presets.

A preset is only a set of field overrides with a description: it chooses values, never code
paths. Precedence, lowest first: defaults, `--preset`, `--config FILE.toml`, command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from glcic.errors import GlcicError
from glcic.networks import TRAINABLE_PARTS
from glcic.precision import PRECISIONS
from glcic.training.losses import RECONSTRUCTION_LOSSES

#: The optimizers a run may use, for both the completion network and the discriminators.
OPTIMIZERS = ("adadelta", "adam")
#: What the discriminators may be shown as a completed crop (`TrainConfig.adversarial_input`).
ADVERSARIAL_INPUTS = ("raw", "blended")


class ConfigError(GlcicError):
    """A config file, preset or flag value that cannot be used."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. Defaults reproduce Iizuka et al. (2017)."""

    # Network
    width: float = 1.0  # hidden channel multiplier of all three networks
    # Data (paper: shorter side rescaled to a random value in [256, 384], random 256x256 crop)
    image_size: int = 256
    rescale_min: int = 256
    rescale_max: int = 384
    flip: bool = True
    # Holes (paper: rectangles with sides in [96, 128] inside a 128x128 local patch)
    local_size: int = 128
    hole_min: int = 96
    hole_max: int = 128
    freeform_fraction: float = 0.0  # share of samples with brush-stroke holes instead
    # Share of holes pushed flush against a side or corner of the crop, as selections that reach
    # the image border are (the paper's holes never touch it: 0).
    edge_hole_fraction: float = 0.0
    # Schedule (paper: T_C = 90,000, T_D = 10,000, T = 500,000)
    completion_steps: int = 90_000
    discriminator_steps: int = 10_000
    total_steps: int = 500_000
    batch_size: int = 96
    alpha: float = 0.0004  # weight of the GAN loss in the joint loss
    lr: float = 1.0  # the optimizer's learning rate (1.0 is ADADELTA's default)
    # adadelta (the paper's) or adam. Adam at a small rate (1e-4) is what moves a trained model
    # within a few hundred steps; Adadelta's steps start near zero and grow as its accumulators
    # fill, so a short fine-tune barely moves (the finetune preset below).
    optimizer: str = "adadelta"
    # Which of the completion network's layers train: all, or decoder (the layers after the
    # last dilated convolution; glcic.networks.trainable_parameters). The discriminators always
    # train whole.
    trainable: str = "all"
    # The completion network's reconstruction loss over the hole: mse (the paper's), l1, or
    # poisson-l1 (L1 of the output Poisson-blended into the truth, as users get it)
    # (glcic.training.losses). The log's loss_mse stays the hole MSE either way, so runs compare.
    # alpha weighs the GAN loss against whichever is chosen.
    reconstruction_loss: str = "mse"
    # What the discriminators judge as the completed crop: raw (the paper's: the network's
    # output pasted into the hole) or blended (Poisson-blended into the known pixels, as users
    # get it). Users never see the raw output's colour offsets, which the blend removes; judged
    # raw, the discriminators can tell fakes by their seams, and the completion network spends
    # the adversarial term on colours rather than on texture.
    adversarial_input: str = "raw"
    # Step decay of the completion network's rate: from lr_drop_step on it trains at
    # lr * lr_drop_factor (0: never). Once the reconstruction loss plateaus at a constant rate,
    # a tenfold drop lowers it again; the discriminators start fresh later and keep `lr`.
    lr_drop_step: int = 0
    lr_drop_factor: float = 0.1
    # Step change of the adversarial weight: from alpha_drop_step on the GAN loss weighs
    # alpha * alpha_drop_factor (0: never). At a constant alpha of 0.01 the fills' texture became
    # a 4-px weave within 2,000 joint steps (recipes/sharp-l1.toml's comments); 0.004 from the
    # step before it showed kept what the adversarial phase had brought without growing it.
    alpha_drop_step: int = 0
    alpha_drop_factor: float = 1.0
    # Weight of the weave penalty in the joint phase (glcic.training.losses.hole_weave_excess:
    # the hole's 2- and 4-px checkerboard beyond the photo's own); 0: none, as in the paper.
    weave_weight: float = 0.0
    # Weight of the spectral penalty in the joint phase (glcic.training.losses.spectral_excess:
    # the blended crop's power above the photo's at periods under 16 px); 0: none, as in the paper.
    spectrum_weight: float = 0.0
    # Running
    seed: int = 0
    workers: int = 2
    compile: bool = False
    # auto, float32 or bfloat16 (autocast); auto: bf16 on CUDA, and on a CPU only where bf16 is
    # measured faster (glcic.precision). Does not shape the networks: may change on resume.
    precision: str = "auto"
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 1000
    # A sample grid is also written when this many minutes have passed since the last one, so a
    # slow run shows its progress long before `sample_every` steps (0: by steps only).
    sample_minutes: float = 10.0
    mean_images: int = 500  # images sampled to compute the mean colour
    # Evaluation during training (`glcic.training.live_eval`): every `eval_every` steps (0:
    # never) the completion network fills holes in `eval_photos` photos that a new run splits
    # off its data and never trains on, and hole PSNR, L1 and detail are logged.
    eval_every: int = 0
    eval_photos: int = 16

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.width <= 4:
            problems.append("width must be in (0, 4]")
        if self.image_size % 4 or self.image_size < 16:
            problems.append("image_size must be a multiple of 4, at least 16")
        if not 0 < self.local_size <= self.image_size:
            problems.append("local_size must be in (0, image_size]")
        if not 0 < self.hole_min <= self.hole_max <= self.local_size:
            problems.append("need 0 < hole_min <= hole_max <= local_size")
        if not self.image_size <= self.rescale_min <= self.rescale_max:
            problems.append("need image_size <= rescale_min <= rescale_max")
        if not 0.0 <= self.freeform_fraction <= 1.0:
            problems.append("freeform_fraction must be in [0, 1]")
        if not 0.0 <= self.edge_hole_fraction <= 1.0:
            problems.append("edge_hole_fraction must be in [0, 1]")
        if min(self.completion_steps, self.discriminator_steps) < 0:
            problems.append("phase lengths must not be negative")
        if self.total_steps < self.completion_steps + self.discriminator_steps:
            problems.append("total_steps must cover completion_steps + discriminator_steps")
        if self.lr <= 0:
            problems.append("lr must be positive")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.reconstruction_loss not in RECONSTRUCTION_LOSSES:
            problems.append(
                f"reconstruction_loss must be one of {', '.join(RECONSTRUCTION_LOSSES)}"
            )
        if self.adversarial_input not in ADVERSARIAL_INPUTS:
            problems.append(f"adversarial_input must be one of {', '.join(ADVERSARIAL_INPUTS)}")
        if self.trainable not in TRAINABLE_PARTS:
            problems.append(f"trainable must be one of {', '.join(TRAINABLE_PARTS)}")
        if self.lr_drop_step < 0 or not 0 < self.lr_drop_factor <= 1:
            problems.append("need lr_drop_step >= 0 and lr_drop_factor in (0, 1]")
        if self.alpha < 0 or self.alpha_drop_step < 0 or not 0 <= self.alpha_drop_factor <= 1:
            problems.append("need alpha >= 0, alpha_drop_step >= 0 and alpha_drop_factor in [0, 1]")
        if self.weave_weight < 0 or self.spectrum_weight < 0:
            problems.append("weave_weight and spectrum_weight must not be negative")
        if self.batch_size < 1:
            problems.append("batch_size must be at least 1")
        if min(self.log_every, self.checkpoint_every, self.sample_every, self.keep_checkpoints) < 1:
            problems.append(
                "log_every, checkpoint_every, sample_every, keep_checkpoints must be >= 1"
            )
        if self.sample_minutes < 0 or self.eval_every < 0 or self.eval_photos < 1:
            problems.append("need sample_minutes >= 0, eval_every >= 0 and eval_photos >= 1")
        if self.workers < 0:
            problems.append("workers must not be negative")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    def phase_at(self, step: int) -> str:
        """The paper's phase of a (0-based) step."""
        if step < self.completion_steps:
            return "completion"
        if step < self.completion_steps + self.discriminator_steps:
            return "discriminator"
        return "joint"

    def completion_lr_at(self, step: int) -> float:
        """The completion network's learning rate at a (0-based) step."""
        if self.lr_drop_step and step >= self.lr_drop_step:
            return self.lr * self.lr_drop_factor
        return self.lr

    def alpha_at(self, step: int) -> float:
        """The adversarial loss's weight at a (0-based) step."""
        if self.alpha_drop_step and step >= self.alpha_drop_step:
            return self.alpha * self.alpha_drop_factor
        return self.alpha

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The finetune preset's length; see its comment.
FINETUNE_STEPS = 400


@dataclass(frozen=True)
class Preset:
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Whether the preset only makes sense from a model (`--init`): its schedule is too short
    #: to train a network from random weights.
    needs_init: bool = False


PRESETS: dict[str, Preset] = {
    "paper": Preset("Iizuka et al. (2017) exactly: width 1, 256x256 crops, batch 96, 500k steps"),
    # The shape and schedule of recipes/default-model.toml, which made glcic 0.1.0's first
    # default model on a 2-core CPU (today's default trained on from it: recipes/sharp-l1.toml).
    # Its notes: holes confined to a 64 px patch (this preset's first version) left large
    # free-form holes, which users select, painted with saturated colour.
    "cpu-small": Preset(
        "for 2-core CPU machines, the first default model's recipe: half width (a quarter "
        "of the compute), 128x128 crops from images rescaled to 128-192 px, holes 24-96 px "
        "in a 96x96 patch (three quarters free-form brush strokes, a quarter touching the crop's "
        "edge), batch 16, 18.5k/1k/22.5k steps, the completion network's rate a tenth from 16k",
        {
            "width": 0.5,
            "image_size": 128,
            "rescale_min": 128,
            "rescale_max": 192,
            "local_size": 96,
            "hole_min": 24,
            "hole_max": 96,
            "freeform_fraction": 0.75,
            "edge_hole_fraction": 0.25,
            "batch_size": 16,
            "completion_steps": 18_500,
            "discriminator_steps": 1_000,
            "total_steps": 22_500,
            "lr_drop_step": 16_000,
            "lr_drop_factor": 0.1,
            "workers": 1,
            "checkpoint_every": 250,
            "sample_every": 1_000,
            "log_every": 50,
        },
    ),
    # Completion only: the file carries no discriminators, and training fresh ones first would
    # take most of a short budget. Measured 2026-12-03/04 fine-tuning the shipped default (half
    # width, 128 px crops) on street scenes (~/ft-street: CamVid without sequence 0001TP plus
    # ICDAR 2015 img_1-400 to train; glcic-eval on 60 photos of 0001TP and on ICDAR img_401-450,
    # x 6 bins). Hole L1 against the default per bin 1-10 % ... 50-60 % (all; PSNR):
    # - Adadelta at 0.1, all layers (the first version): 6.3 images/s on a 2-core AMD EPYC (AVX2,
    #   no bf16), 35 minutes; held-out (16 box holes) L1 0.0870 -> 0.0879 at 400 steps.
    # - Adam 1e-4, decoder only, hole MSE, 800 steps (about 18 minutes at 12 images/s): CamVid
    #   +2.0, -0.3, -1.6, -2.6, -5.2, -6.1 % (-3.1 %; +0.09 dB); ICDAR +0.3, -0.3, -0.7, -1.0,
    #   -1.0, -2.1 % (-1.0 %; 0.00 dB). At 600 steps: CamVid -1.4 %, ICDAR +0.2 % in all.
    # - The same, crops at other scales (the pipeline fills holes up to hole_max thick at the
    #   photo's own scale, so the scale was the suspect for small holes): the photos' own scale
    #   (rescale 288-288) CamVid +1.4, +1.0, -0.5, -0.6, -2.5, -3.5 %; 160-288: +1.9, -0.2, -1.7,
    #   -3.0, -5.2, -7.2 %; up to 720 (2.5x upscaled): +1.2, +0.7, 0.0, -0.9, -2.6, -4.1 %.
    #   Scale is not why small holes do not gain.
    # - Adam 1e-4, decoder only, hole L1, 600 steps (9m53s alone at 16.8 images/s):
    #   CamVid +1.3, -2.0, -3.2, -3.5, -5.8, -5.2 % (-3.7 %; +0.07 dB); ICDAR -0.1, -1.5, -1.2,
    #   -1.1, -0.9, -1.8 % (-1.2 %; -0.03 dB). Better than MSE in 800 steps in 9 of these 12 bins.
    # - Hole MSE averaged per crop, so small holes weigh as much as large ones (600 steps): CamVid
    #   +2.0, -0.1, -0.7, -0.9, -1.7, -1.7 %: no help for small holes.
    # - Hole L1 after a differentiable Poisson blend (poisson-l1, 50 CG iterations), 400 steps
    #   (this preset: 10m02s alone, 10.6 images/s, as long as plain L1's 600 steps): CamVid +1.4,
    #   -3.2, -4.8, -5.8, -10.3, -10.2 % (-6.6 %; +0.12 dB); ICDAR -0.8, -1.4, -1.7, -2.2, -2.3,
    #   -3.1 % (-2.1 %). Better than L1's 600 steps in 10 of 12 bins, level in the other two; at
    #   600 steps (14m34s alone) CamVid +0.4, -4.5, -5.8, -6.7, -10.7, -9.7 %, ICDAR -0.5, -2.2,
    #   -2.3, -2.6, -2.6, -3.0 %: over the time budget under load.
    # Small holes (1-10 %) do not gain in any setting: without Poisson blending the fine-tuned
    # network's own fill there is 9.5 % worse (hole MSE, 800 steps), and the blend hides most of
    # it. Not yet issue 19's bar (-5 % in every bin up to 40 %). Raw results:
    # benchmarks/results/finetune-street-2026-12-03/.
    "finetune": Preset(
        "adapting a model (--init MODEL, for example --init default) to a studio's own photos "
        "in minutes: its network, crop and hole settings are kept, and only the completion "
        f"network's decoder trains, {FINETUNE_STEPS} steps of 16 crops with Adam at 1e-4 on the "
        "hole's L1 error after Poisson blending, "
        "evaluated on held-out photos of the data every 200 steps",
        {
            "completion_steps": FINETUNE_STEPS,
            "discriminator_steps": 0,
            "total_steps": FINETUNE_STEPS,
            "batch_size": 16,
            "optimizer": "adam",
            "lr": 1e-4,
            "trainable": "decoder",
            "reconstruction_loss": "poisson-l1",
            "workers": 1,
            "log_every": 10,
            "checkpoint_every": 100,
            "sample_every": 200,
            "sample_minutes": 2.0,
            "eval_every": 200,
        },
        needs_init=True,
    ),
    "tiny-test": Preset(
        "for tests: a tiny network on 32x32 crops, every phase a few steps",
        {
            "width": 0.0625,
            "image_size": 32,
            "rescale_min": 32,
            "rescale_max": 48,
            "local_size": 16,
            "hole_min": 8,
            "hole_max": 12,
            "batch_size": 2,
            "completion_steps": 3,
            "discriminator_steps": 2,
            "total_steps": 8,
            "workers": 0,
            "log_every": 1,
            "checkpoint_every": 2,
            "sample_every": 4,
            "mean_images": 8,
            # Tests check bit-exact resumes and gradients. bf16 autocast on a CPU with bf16
            # instructions (AMX, AVX-512 BF16) is not bit-reproducible from run to run (its
            # convolution weight gradients differ in the last bits), so `auto` would make
            # those tests depend on the machine; tests of bf16 ask for it by name.
            "precision": "float32",
        },
    ),
}


def _field_types() -> dict[str, type]:
    return {f.name: type(getattr(TrainConfig(), f.name)) for f in fields(TrainConfig)}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _field_types().get(name)
    if kind is None:
        raise ConfigError(f"{source}: unknown setting {name!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be a {kind.__name__}, got {value!r}") from None


def load_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    section = document.get("train", document)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [train] must be a table")
    return {key: _coerce(key, value, str(path)) for key, value in section.items()}


def build_config(
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    inherited: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults < `base` (a resumed run's config) < preset < `inherited` (from an `--init`
    model, `glcic.training.inherit`) < config file < explicit overrides."""
    values: dict[str, Any] = dict(base or {})
    if preset is not None:
        values.update(preset_values(preset))
    values.update(inherited or {})
    values.update(user_choices(config_file, overrides))
    return TrainConfig(**values)


def preset_values(preset: str) -> dict[str, Any]:
    """The fields a preset sets; `ConfigError` for an unknown name."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return dict(PRESETS[preset].overrides)


def user_choices(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The fields the user set explicitly: a `--config` file's, then command-line flags'."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(load_toml(config_file))
    for key, value in (overrides or {}).items():
        values[key] = _coerce(key, value, "command line")
    return values


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One `--field-name VALUE` flag per config field (defaults None = not given)."""
    group = parser.add_argument_group("config fields (override preset and config file)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _field_types()[f.name]
        default = getattr(TrainConfig(), f.name)
        metavar = "BOOL" if kind is bool else kind.__name__.upper()
        group.add_argument(
            flag, dest=f"cfg_{f.name}", default=None, metavar=metavar,
            help=f"default {default}",
        )  # fmt: skip


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        f.name: getattr(args, f"cfg_{f.name}")
        for f in fields(TrainConfig)
        if getattr(args, f"cfg_{f.name}", None) is not None
    }


def border_blend_for(config: TrainConfig, inherited: str | None = None) -> str:
    """How the pipeline should blend a run's fills at the image edge (glcic.blending's
    BORDER_BLENDS). A fine-tuned run keeps its `--init` model's (`inherited`), as it keeps the
    context shift: the measured choice for those weights (the default model's was measured with
    benchmarks/border_band.py), which a short fine-tuning does not overturn. A run from scratch:
    "mirror" where it trained on the `poisson-l1` loss, which blends with the edge free and so
    teaches the network its colours there; otherwise "telea", the safe choice for networks whose
    output at their input's edge was never scored after blending."""
    if inherited is not None:
        return inherited
    return "mirror" if config.reconstruction_loss == "poisson-l1" else "telea"
