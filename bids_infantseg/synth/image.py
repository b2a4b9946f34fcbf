"""Images from generation labels: age-aware T2 contrast, domain-randomised."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_infantseg.synth.classes import contrast_centres
from bids_infantseg.synth.fields import separable_noise, smooth_noise


def synthesize_image(gen: np.ndarray, rng: np.random.Generator, age_months: float,
                     voxel_size, *, random_contrast: float = 0.15) -> np.ndarray:
    """A T2w-like image (float32, ~[0, 1]) from generation labels, domain-randomised.

    Per-label means jittered around the age's contrast (with probability ``random_contrast``
    drawn uniformly instead), within-label texture, blur for partial volume and random
    (anisotropic) resolution, a smooth bias field, a gamma change and Rician noise.
    """
    voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    n = len(contrast_centres(age_months))
    if rng.uniform() < random_contrast:
        means = rng.uniform(0.0, 1.0, n).astype(np.float32)
    else:
        means = contrast_centres(rng.uniform(age_months - 1.5, age_months + 1.5))
        means = np.clip(means + rng.normal(0, 0.04, n), 0.0, 1.0).astype(np.float32)
    stds = rng.uniform(0.01, 0.06, n).astype(np.float32)
    texture = smooth_noise(rng, gen.shape, voxel_size, rng.uniform(2.0, 5.0))
    image = means[gen] + stds[gen] * texture
    sigma_mm = rng.uniform(0.3, 0.9, 3) * voxel_size
    if rng.uniform() < 0.5:
        sigma_mm[rng.integers(3)] = rng.uniform(1.0, 2.5)
    image = ndimage.gaussian_filter(image, sigma_mm / voxel_size, truncate=2.5)
    bias = separable_noise(rng, gen.shape, voxel_size, rng.uniform(50.0, 100.0))
    image *= np.exp(rng.uniform(0.05, 0.3) * bias)
    image = np.clip(image, 0.0, None) / max(float(image.max()), 1e-6)
    image **= np.float32(np.exp(rng.normal(0.0, 0.2)))
    noise = rng.uniform(0.005, 0.04)
    real = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    imag = rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)

