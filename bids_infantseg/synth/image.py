"""Images from generation labels: age-aware T2 contrast, domain-randomised, in torch."""

from __future__ import annotations

import numpy as np
import torch

from bids_infantseg.synth.config import GeneratorConfig, default_if_none, draw
from bids_infantseg.synth.fields import (
    Device,
    as_device,
    gaussian_blur,
    one_thread,
    separable_noise,
    smooth_noise,
    torch_generator,
)


def synthesize_image(gen: np.ndarray, rng: np.random.Generator, age_months: float,
                     voxel_size, *, random_contrast: float | None = None,
                     config: GeneratorConfig | None = None,
                     device: Device = None) -> np.ndarray:
    """A T2w-like image (float32, ~[0, 1]) from generation labels, domain-randomised.

    Per-label means jittered around the age's contrast (the configuration's T2 curves; with
    probability ``random_contrast``, default the configuration's, drawn uniformly instead),
    within-label texture, blur for partial volume and random (anisotropic) resolution, a
    smooth bias field, a gamma change and Rician noise; computed on ``device`` (CPU default),
    every random draw from ``rng``, on one CPU thread (``fields.one_thread``).
    """
    with one_thread(device):
        return _synthesized(gen, rng, age_months, voxel_size, random_contrast,
                            default_if_none(config), as_device(device))


def _synthesized(gen: np.ndarray, rng: np.random.Generator, age_months: float, voxel_size,
                 random_contrast: float | None, config: GeneratorConfig,
                 device: torch.device) -> np.ndarray:
    """``synthesize_image``'s work."""
    s = config.image
    voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    n = len(config.classes)
    chance = s.random_contrast_probability if random_contrast is None else random_contrast
    if rng.uniform() < chance:
        means = rng.uniform(0.0, 1.0, n)
    else:
        means = config.contrast_centres(rng.uniform(age_months - s.age_jitter_months,
                                                    age_months + s.age_jitter_months))
        means = np.clip(means + rng.normal(0, s.mean_jitter_sd, n), 0.0, 1.0)
    stds = rng.uniform(*s.texture_sd, n)
    labels = torch.as_tensor(np.asarray(gen), device=device).long()
    texture = smooth_noise(rng, gen.shape, voxel_size, draw(rng, s.texture_scale_mm),
                           device=device, fields=config.fields)
    table = torch.as_tensor(np.stack([means, stds]), dtype=torch.float32, device=device)
    image = table[0][labels].add_(table[1][labels].mul_(texture))
    sigma_mm = rng.uniform(*s.blur_sigma_voxels, 3) * voxel_size
    if rng.uniform() < s.thick_slice_probability:
        sigma_mm[rng.integers(3)] = draw(rng, s.thick_slice_sigma_mm)
    image = gaussian_blur(image, sigma_mm / voxel_size, s.blur_truncate)
    bias = separable_noise(rng, gen.shape, voxel_size, draw(rng, s.bias_scale_mm),
                           config.fields.separable_terms, device=device)
    image.mul_(torch.exp_(bias.mul_(draw(rng, s.bias_strength))))
    image.clamp_(min=0.0).div_(max(float(image.max()), 1e-6))
    image.pow_(float(np.exp(rng.normal(0.0, s.gamma_log_sd))))
    noise = draw(rng, s.noise_sd)
    generator = torch_generator(rng, device)
    real = image.add_(torch.randn(image.shape, generator=generator, device=device), alpha=noise)
    imag = torch.randn(image.shape, generator=generator, device=device).mul_(noise)
    return torch.sqrt_(real.square_().add_(imag.square_())).cpu().numpy()
