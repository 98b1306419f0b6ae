"""Training data: every image under some folders, as the paper's random crops with holes.

Randomness per sample comes from a generator seeded by (seed, epoch, index), not from worker
state, so a sample is the same whatever the number of DataLoader workers, and a resumed run sees
exactly the samples an uninterrupted one would have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from glcic.errors import GlcicError
from glcic.training.config import TrainConfig
from glcic.training.holes import sample_hole

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}

log = logging.getLogger("glcic.training")

#: What a broken, truncated, foreign or absurdly large image file raises while decoding.
_UNREADABLE = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)


class DataError(GlcicError):
    """The training data cannot be used."""


def find_images(folders: Sequence[Path]) -> list[Path]:
    """Image files under `folders` (recursive), sorted, so every rank sees the same list."""
    found: set[Path] = set()
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder")
        found.update(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    return sorted(found)


def usable_images(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Split into (readable, skipped) by opening each file's header; warns once per skip."""
    usable, skipped = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
            usable.append(path)
        except _UNREADABLE as error:
            log.warning("skipping unreadable image %s (%s)", path, error)
            skipped.append(path)
    return usable, skipped


def load_rgb(path: Path) -> Image.Image:
    """Decode fully (so truncation shows now), converting grayscale and palette images to RGB."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


class HoleDataset(Dataset):
    """Indexed by (epoch, index); returns the crop, its hole and the two local patch corners."""

    def __init__(self, paths: Sequence[Path], config: TrainConfig) -> None:
        if not paths:
            raise DataError("no usable images")
        self.paths = list(paths)
        self.config = config

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        rng = np.random.default_rng([self.config.seed, epoch, index])
        # A file that fails to decode now (truncated) is replaced by the next one, always the same.
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                image = load_rgb(path)
                break
            except _UNREADABLE as error:
                log.warning("skipping image that fails to decode: %s (%s)", path, error)
        else:
            raise DataError("no image in the data decodes")
        crop = random_crop(image, rng, self.config)
        cfg = self.config
        hole = sample_hole(
            rng,
            cfg.image_size,
            cfg.local_size,
            cfg.hole_min,
            cfg.hole_max,
            cfg.freeform_fraction,
            cfg.edge_hole_fraction,
        )
        return {
            "image": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))),
            "mask": torch.from_numpy(hole.mask[None]),
            "hole_box": torch.tensor(hole.hole_box),
            "real_box": torch.tensor(hole.real_box),
        }


def random_crop(image: Image.Image, rng: np.random.Generator, config: TrainConfig) -> np.ndarray:
    """Shorter side to a random size in [rescale_min, rescale_max], random crop, random flip."""
    shorter = int(rng.integers(config.rescale_min, config.rescale_max + 1))
    width, height = image.size
    scale = shorter / min(width, height)
    size = (
        max(config.image_size, round(width * scale)),
        max(config.image_size, round(height * scale)),
    )
    resized = np.asarray(image.resize(size, Image.BILINEAR, reducing_gap=3.0))
    y = int(rng.integers(0, size[1] - config.image_size + 1))
    x = int(rng.integers(0, size[0] - config.image_size + 1))
    crop = resized[y : y + config.image_size, x : x + config.image_size]
    if config.flip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop


class EpochStream(Sampler):
    """An endless stream of (epoch, index) keys for one rank, starting at a given sample.

    Each epoch is a permutation seeded by (seed, epoch), cut into equal shards per rank, so all
    ranks take the same number of steps. Starting at sample `start` (steps done x batch size)
    continues a run exactly where it stopped.
    """

    def __init__(self, size: int, seed: int, rank: int, world: int, start: int = 0) -> None:
        if size < world:
            raise DataError(f"{size} images cannot be shared among {world} processes")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start
        self.per_rank = size // world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator)[: self.per_rank * self.world]
            shard = order[self.rank :: self.world].tolist()
            for index in shard[offset:]:
                yield epoch, index
            epoch, offset = epoch + 1, 0


def mean_colour(paths: Sequence[Path], count: int, seed: int) -> tuple[float, float, float]:
    """Mean RGB in [0, 1] over up to `count` images (chosen by seed), each at most 256 px."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(paths))[:count]
    totals = np.zeros(3)
    pixels = 0
    for index in sorted(chosen.tolist()):
        try:
            image = load_rgb(paths[index])
        except _UNREADABLE:
            continue
        image.thumbnail((256, 256))
        array = np.asarray(image, dtype=np.float64) / 255.0
        totals += array.reshape(-1, 3).sum(axis=0)
        pixels += array.shape[0] * array.shape[1]
    if pixels == 0:
        raise DataError("no image could be decoded to compute the mean colour")
    mean = totals / pixels
    return (float(mean[0]), float(mean[1]), float(mean[2]))
