"""Captioned textured images for `textures-t2i`, deterministic from (seed, index).

The layout and the caption are shapes-t2i's (`sjd_batch.training.shapes.data`): one to three objects,
each named by size, colour, shape and 3×3 grid cell, drawn from the same random stream, so stream
(seed, index) has the same caption in both generators. What differs is everything the caption does
not name. The whole 64×64 image is one procedural texture: a Gaussian random field whose fine scale,
orientation, stretch and illumination are drawn per image. The background shows it dark and
desaturated; each object shows the same field tinted with its named colour, bright and saturated. So
the checker of shapes-t2i still reads colour, shape and cell, while the pixels inside and around
the objects carry real, spatially local randomness.

Why a texture: real AR text-to-image models sample image tokens from wide laws (4-7 nats) in which a
token depends strongly on its immediate neighbours and little on tokens a few positions away. A field
with a correlation length of one to two pixels has exactly that: a 4×4 patch is uncertain, but its
edge pixels are predicted by the adjacent patch's edge, and the dependence dies out within a patch or
two. `fine` (pixels) is the main knob: a larger scale makes patches more predictable from their
neighbours (lower entropy, stronger dependence), a smaller one the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sjd_batch.training.shapes.data import (
    COLORS,
    IMAGE_SIZE,
    JITTER,
    SIZES,
    Sample,
    caption_of,
    cell_center,
    sample_objects,
    shape_mask,
)

BACKGROUND_MAX = 110  # as shapes-t2i: the checker's object threshold (130) stays well above it


@dataclass(frozen=True)
class TextureConfig:
    """The ranges each image's texture parameters are drawn from (uniformly).

    Attributes:
        fine: fine-scale standard deviation of the Gaussian filter, in pixels (the main knob).
        stretch: ratio of the filter's long to short axis (oriented textures such as wood or grass).
        illumination: weight of a coarse (sigma `coarse`) component: slow brightness changes.
        level, contrast: background grey level and its standard deviation, in 0-255 units.
        tint: per-channel offset of the background, in 0-255 units (keeps it desaturated).
        object_gain: object brightness = colour × (gain + object_swing × field), clipped to [0.6, 1].
    """

    fine: tuple[float, float] = (1.0, 1.8)
    stretch: tuple[float, float] = (1.0, 2.5)
    coarse: float = 12.0
    illumination: tuple[float, float] = (0.0, 0.5)
    level: tuple[float, float] = (35.0, 70.0)
    contrast: tuple[float, float] = (14.0, 24.0)
    tint: float = 8.0
    object_gain: float = 0.86
    object_swing: float = 0.09


# Named presets, so a training stage names the textures it saw (`TexturesTrainConfig.texture`).
TEXTURES = {
    "v1": TextureConfig(),  # stage 1
    # stage 2 on: less stretch, because elongated textures correlate a token with the one up a row and two
    # columns right (d = 15 in a 16-wide layout; calibrated TV at 15 was 0.074 after stage 1), and a
    # slightly finer grain, to keep the entropy up as the model sharpens (5.3 -> 5.0 nats over stage 1)
    "v2": TextureConfig(fine=(0.9, 1.6), stretch=(1.0, 1.6)),
}
DEFAULT = TEXTURES["v2"]
_FREQ = np.fft.fftfreq(IMAGE_SIZE)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def gaussian_field(
    rng: np.random.Generator, sigma: float, stretch: float = 1.0, angle: float = 0.0
) -> np.ndarray:
    """A zero-mean, unit-variance [64, 64] field: white noise through an oriented Gaussian filter.

    Filtering is a product in the Fourier domain (the image wraps around, which no patch can tell).
    """
    fy, fx = np.meshgrid(_FREQ, _FREQ, indexing="ij")
    u = fx * np.cos(angle) + fy * np.sin(angle)
    v = -fx * np.sin(angle) + fy * np.cos(angle)
    s_long, s_short = sigma * np.sqrt(stretch), sigma / np.sqrt(stretch)
    gain = np.exp(-2 * np.pi**2 * ((u * s_long) ** 2 + (v * s_short) ** 2))
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE))) * gain).real
    return (field - field.mean()) / max(float(field.std()), 1e-8)


def texture(rng: np.random.Generator, cfg: TextureConfig = DEFAULT) -> np.ndarray:
    """One image's texture: a unit-variance [64, 64] field, fine detail plus slow illumination."""
    fine = gaussian_field(rng, _uniform(rng, cfg.fine), _uniform(rng, cfg.stretch), rng.uniform(0, np.pi))
    weight = _uniform(rng, cfg.illumination)
    coarse = gaussian_field(rng, cfg.coarse)
    field = np.sqrt(1 - weight**2) * fine + weight * coarse
    return field / max(float(field.std()), 1e-8)


def render(objects, rng: np.random.Generator, cfg: TextureConfig = DEFAULT) -> np.ndarray:
    """Textured background, then the objects tinted over the same field: uint8 [64, 64, 3]."""
    field = texture(rng, cfg)
    level, contrast = _uniform(rng, cfg.level), _uniform(rng, cfg.contrast)
    tint = rng.uniform(-cfg.tint, cfg.tint, size=3)
    img = np.clip(level + contrast * field[..., None] + tint, 0, BACKGROUND_MAX)
    gain = np.clip(cfg.object_gain + cfg.object_swing * field, 0.6, 1.0)[..., None]
    for o in objects:
        cx, cy = cell_center(o.cell)
        j = JITTER[o.size]
        cx, cy = cx + rng.integers(-j, j + 1), cy + rng.integers(-j, j + 1)
        mask = shape_mask(o.shape, cx, cy, SIZES[o.size])
        img[mask] = (np.asarray(COLORS[o.color], dtype=np.float64) * gain)[mask]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_sample(seed: int, index: int, cfg: TextureConfig = DEFAULT) -> Sample:
    """Sample `index` of the stream `seed`: a pure function of (seed, index); its caption and objects
    are shapes-t2i's for the same (seed, index)."""
    rng = np.random.default_rng([seed, index])
    objects = sample_objects(rng)
    return Sample(render(objects, rng, cfg), caption_of(objects), objects)


def make_batch(seed: int, start: int, count: int, cfg: TextureConfig = DEFAULT):
    """Samples start .. start+count-1: pixels [count, 64, 64, 3] uint8, captions, samples."""
    samples = [make_sample(seed, start + i, cfg) for i in range(count)]
    return np.stack([s.pixels for s in samples]), [s.caption for s in samples], samples
