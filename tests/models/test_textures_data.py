"""textures-t2i's generator and its checker (shapes-t2i's, which reads textured images as well): pure in
(seed, index), the same captions as shapes-t2i's stream, uncaptioned texture, 100% on ground truth,
every mismatched caption rejected, and a negative control the checker must fail."""

from __future__ import annotations

import numpy as np

from sjd_batch.training.shapes.checker import check, mismatched_caption
from sjd_batch.training.shapes.data import make_sample as shapes_sample
from sjd_batch.training.textures.data import BACKGROUND_MAX, make_batch, make_sample

HELDOUT = 999


def test_generator_is_pure_and_shares_shapes_captions():
    a, b, c = make_sample(3, 17), make_sample(3, 17), make_sample(3, 18)
    assert np.array_equal(a.pixels, b.pixels) and a.caption == b.caption
    assert not np.array_equal(a.pixels, c.pixels)
    assert a.pixels.shape == (64, 64, 3) and a.pixels.dtype == np.uint8
    for i in range(50):  # the caption stream is shapes-t2i's: same (seed, index), same caption
        assert make_sample(HELDOUT, i).caption == shapes_sample(HELDOUT, i).caption


def test_background_is_textured_and_dark():
    pixels = make_batch(HELDOUT, 0, 32)[0].astype(np.float64)
    background = pixels.max(-1) <= BACKGROUND_MAX
    assert background.mean() > 0.6
    # texture: neighbouring pixels differ (shapes-t2i's smooth fields barely do), but are correlated
    dx = np.abs(np.diff(pixels.mean(-1), axis=2))
    assert np.median(dx[background[:, :, 1:] & background[:, :, :-1]]) > 3.0
    grey = pixels.mean(-1)
    left, right = grey[:, :, :-1].ravel(), grey[:, :, 1:].ravel()
    assert 0.5 < np.corrcoef(left, right)[0, 1] < 0.99


def test_checker_accepts_every_ground_truth_image():
    pixels, captions, _ = make_batch(HELDOUT, 0, 300)
    assert all(check(p, c).ok for p, c in zip(pixels, captions, strict=True))


def test_checker_rejects_every_mismatched_caption():
    rng = np.random.default_rng(0)
    for i in range(300):
        s = make_sample(HELDOUT, i)
        assert not check(s.pixels, mismatched_caption(s.objects, rng)).ok


def test_negative_control_objects_painted_over_fail():
    """The checker must see the objects: with them covered by background texture it rejects."""
    blank = make_sample(HELDOUT + 1, 0).pixels  # another image's pixels, objects painted over below
    blank = np.where(blank.max(-1, keepdims=True) > BACKGROUND_MAX, 40, blank).astype(np.uint8)
    for i in range(50):
        assert not check(blank, make_sample(HELDOUT, i).caption).ok


def test_texture_presets_change_pixels_not_captions():
    from sjd_batch.training.textures.data import TEXTURES
    from sjd_batch.training.textures.train import TexturesTrainConfig, images

    a = make_sample(HELDOUT, 5, TEXTURES["v1"])
    b = make_sample(HELDOUT, 5, TEXTURES["v2"])
    assert a.caption == b.caption and not np.array_equal(a.pixels, b.pixels)
    assert np.array_equal(images(TexturesTrainConfig(texture="v1"))(HELDOUT, 5, 1)[0][0], a.pixels)
    try:
        images(TexturesTrainConfig(texture="v9"))
    except ValueError as e:
        assert "v9" in str(e) and "v1" in str(e)
    else:
        raise AssertionError("an unknown texture preset was accepted")
