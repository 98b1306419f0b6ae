"""The reconstruction losses, shared by training and by adapting a model to one image."""

from __future__ import annotations

from collections.abc import Callable

import torch


def hole_mse(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over hole pixels (and channels) only, as the paper's weighted MSE.

    Averaging over all pixels instead would shrink the loss by the hole's share of the image.
    """
    return _hole_mean((output - target).pow(2), hole)


def hole_l1(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Absolute error averaged over hole pixels (and channels) only.

    Its minimiser is the per-pixel median rather than the mean, and a pixel already close to the
    truth still gets a full-sized gradient; fine-tuning with it lowers the hole's L1 on held-out
    photos further than hole MSE does in the same steps (see the finetune preset in
    glcic.training.config).
    """
    return _hole_mean((output - target).abs(), hole)


def poisson_blended(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """`output` Poisson-blended into `target` over `hole` (outside the hole: `output`), as the
    pipeline blends the fills of models exported from such runs (`border_blend` "mirror": the
    image edge free; the pipeline caps the reflection's depth). Differentiable in `output`."""
    return output + harmonic_extension(target - output, hole) * hole


def hole_poisson_l1(
    output: torch.Tensor,
    target: torch.Tensor,
    hole: torch.Tensor,
    blended: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hole L1 of the output after Poisson blending into the truth, plus a quarter of the raw L1.

    Users never see the raw output: the pipeline clones its gradients into the photo, and the
    hole's boundary values then come from the known pixels (glcic.blending). This loss scores
    that blended fill, so training spends its capacity on what the blend keeps (the fill's
    structure) rather than on offsets the blend removes anyway. The small raw term keeps the
    output's own levels sensible for `--blend none`. On street photos it lowered hole L1 about
    twice as much as plain L1 in the same 600 fine-tuning steps (BENCHMARKS.md, Fine-tuning).
    `blended`: `poisson_blended(output, target, hole)` when the caller has it already.
    """
    if blended is None:
        blended = poisson_blended(output, target, hole)
    return _hole_mean((blended - target).abs(), hole) + 0.25 * hole_l1(output, target, hole)


#: ITU-R BT.601 luma weights, as OpenCV's RGB-to-grey (glcic.training.metrics.hole_checker).
_LUMA = (0.299, 0.587, 0.114)


def _luma(image: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB to (N, 1, H, W) luma."""
    return (image * image.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def hole_weave_excess(
    output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor, lags: tuple[int, ...] = (1, 2)
) -> torch.Tensor:
    """How much more checkerboard the output's luma has in the hole than the truth's, summed
    over `lags` and averaged over the batch: relu(mean |d_k(output)| - mean |d_k(truth)|) per
    image, where d_k is the mixed second difference at lag k over windows inside the hole.

    Under the adversarial loss the completion network answered the discriminators with a
    regular 2- and 4-px weave (its transposed convolutions' cheapest high frequency) rather than
    with texture (benchmarks/fill_texture.py). This charges only the excess over the photo's
    own, so real texture, which has some, costs nothing.
    """
    grey_out, grey_truth = _luma(output), _luma(target)
    total = output.new_zeros(())
    for lag in lags:
        window = hole[..., :-lag, :-lag] * hole[..., lag:, :-lag]
        window = window * hole[..., :-lag, lag:] * hole[..., lag:, lag:]
        count = window.sum(dim=(1, 2, 3)).clamp_min(1.0)
        means = []
        for grey in (grey_out, grey_truth):
            mixed = grey[..., :-lag, :-lag] - grey[..., lag:, :-lag]
            mixed = mixed - grey[..., :-lag, lag:] + grey[..., lag:, lag:]
            means.append((mixed.abs() * window).sum(dim=(1, 2, 3)) / count)
        total = total + torch.relu(means[0] - means[1]).mean()
    return total


#: Longest period (px) `spectral_excess` looks at: the weaves and plaids seen had periods of
#: 2-8 px, and a fill's colour errors, which the reconstruction loss already charges, live in
#: the longer ones.
LONGEST_PATTERN = 16


def spectral_excess(
    output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor, spread: int = 5
) -> torch.Tensor:
    """Power the completed crop's luma has beyond the photo's at short periods, as a share of
    the photo's power there; averaged over the batch.

    The crop is completed by pasting `output` into the hole, so the two spectra differ only by
    what the fill adds. The photo's power spectrum, averaged over `spread` x `spread`
    neighbouring frequencies (or its own power, where that is more), is the allowance: a
    periodic pattern (a weave, stripes, a plaid) puts its power into a few frequencies far above
    it, while texture with the photo's own spread of frequencies stays near it. Only periods
    under LONGEST_PATTERN count, as a share of the photo's power there. A mixed second
    difference alone (`hole_weave_excess`) is blind to stripes and plaids, and training
    answered it with them.
    """
    completed = target + (output - target) * hole
    height, width = target.shape[-2:]
    window = torch.outer(
        torch.hann_window(height, periodic=False, device=target.device, dtype=target.dtype),
        torch.hann_window(width, periodic=False, device=target.device, dtype=target.dtype),
    )
    powers = []
    for image in (completed, target):
        grey = _luma(image).squeeze(1)
        grey = grey - grey.mean(dim=(1, 2), keepdim=True)
        powers.append(torch.fft.rfft2(grey * window).abs().pow(2))
    power_out, power_truth = powers
    padded = torch.nn.functional.pad(power_truth.unsqueeze(1), (spread // 2,) * 4, mode="replicate")
    allowance = torch.maximum(
        power_truth, torch.nn.functional.avg_pool2d(padded, spread, stride=1).squeeze(1)
    )
    rows = torch.fft.fftfreq(height, device=target.device).abs().view(-1, 1)
    columns = torch.fft.rfftfreq(width, device=target.device).view(1, -1)
    fine = (rows.pow(2) + columns.pow(2)).sqrt() >= 1 / LONGEST_PATTERN
    excess = (torch.relu(power_out - allowance) * fine).sum(dim=(1, 2))
    return (excess / (power_truth * fine).sum(dim=(1, 2)).clamp_min(1e-8)).mean()


#: Conjugate-gradient iterations of the blend's solve. 160 remove a constant offset over a 90x70
#: hole to 1e-7, 80 to 2 %; 50 leave the widest training holes' centres partly unsolved, yet
#: fine-tuned as well as 100 (street photos, 600 steps: within 0.5 % in every bin) in 0.8x the
#: time, so the finetune preset affords it.
POISSON_ITERATIONS = 50


def harmonic_extension(
    difference: torch.Tensor, hole: torch.Tensor, iterations: int = POISSON_ITERATIONS
) -> torch.Tensor:
    """Inside the hole: the harmonic function (discrete 4-neighbour Laplace equation) whose
    values on the known pixels next to the hole are `difference`'s; zero elsewhere.

    output + harmonic_extension(target - output) is Perez et al.'s Poisson blend of the output
    into the target. The image edge is a free boundary. Differentiable in `difference`; the
    hole (N, 1, H, W of 0/1) is a constant.
    """
    return _HarmonicExtension.apply(difference, hole, iterations)


class _HarmonicExtension(torch.autograd.Function):
    """h = A^-1 B d, with A the Laplacian restricted to the hole and B d the known neighbours'
    sum: both linear, A symmetric, so the backward pass is one more solve."""

    @staticmethod
    def forward(ctx, difference, hole, iterations):  # type: ignore[override]
        # The solver slices rows and columns: on the trainer's channels_last tensors that is 3x
        # slower than on plain NCHW ones, so it works on NCHW copies.
        difference, hole = difference.contiguous(), hole.contiguous()
        ctx.save_for_backward(hole)
        ctx.iterations = iterations
        return _solve_in_hole(_neighbour_sum(difference * (1 - hole)) * hole, hole, iterations)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (hole,) = ctx.saved_tensors
        solved = _solve_in_hole(grad.contiguous() * hole, hole, ctx.iterations)
        return (1 - hole) * _neighbour_sum(solved * hole), None, None


def _neighbour_sum(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of each pixel's 4 neighbours inside the image (slicing: 40x faster than conv2d),
    written into `out` when given (the solver's loop reuses one buffer)."""
    total = torch.zeros_like(x) if out is None else out.zero_()
    total[..., 1:, :] += x[..., :-1, :]
    total[..., :-1, :] += x[..., 1:, :]
    total[..., :, 1:] += x[..., :, :-1]
    total[..., :, :-1] += x[..., :, 1:]
    return total


def _image_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the dot product of `a` and `b` over the pixels (N, C, 1, 1)."""
    return torch.linalg.vecdot(a.flatten(2), b.flatten(2))[..., None, None]


def _solve_in_hole(rhs: torch.Tensor, hole: torch.Tensor, iterations: int) -> torch.Tensor:
    """Conjugate gradients for (degree - adjacency in the hole) x = rhs, per image and channel.

    The loop runs in place on preallocated buffers: this solve, twice a step, was a third of a
    half-width training step on a 2-core CPU, and fresh tensors per operation cost it 3x
    (BENCHMARKS.md, "The Poisson-blend loss"). The direction stays zero outside the hole (the
    rhs and every product are masked), so the operator needs no masking of its input.
    """
    degree_in_hole = _neighbour_sum(torch.ones_like(hole)) * hole
    solution = torch.zeros_like(rhs)
    residual = rhs * hole
    direction = residual.clone()
    product = torch.empty_like(rhs)
    neighbours = torch.empty_like(rhs)
    norm = _image_dot(residual, residual)
    for _ in range(iterations):
        _neighbour_sum(direction, out=neighbours)
        torch.mul(direction, degree_in_hole, out=product).addcmul_(neighbours, hole, value=-1.0)
        step = norm / _image_dot(direction, product).clamp_min(1e-12)
        solution.addcmul_(step, direction)
        residual.addcmul_(step, product, value=-1.0)
        new_norm = _image_dot(residual, residual)
        direction.mul_(new_norm / norm.clamp_min(1e-12)).add_(residual)
        norm = new_norm
    return solution


def _hole_mean(error: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Per-pixel error (N, C, H, W) averaged over the hole's pixels and the channels."""
    return (error * hole).sum() / (hole.sum() * error.shape[1]).clamp_min(1.0)


#: Reconstruction losses by config name (`TrainConfig.reconstruction_loss`).
RECONSTRUCTION_LOSSES: dict[
    str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
] = {
    "mse": hole_mse,
    "l1": hole_l1,
    "poisson-l1": hole_poisson_l1,
}
