"""Read-path kernels against their NumPy references: exhaustive bytes, random and degenerate arrays."""
from __future__ import annotations

import numpy as np
import pytest

from taskology.data.read_kernels import all_finite, all_finite_reference, rgb_chw_float, rgb_chw_float_reference


def test_rgb_every_byte_is_the_correctly_rounded_float32_quotient() -> None:
    values = np.arange(256, dtype=np.uint8)
    image = np.stack([values, values[::-1], values], axis=-1).reshape(16, 16, 3)
    out = rgb_chw_float(image)
    expected = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # IEEE float32 division
    assert out.dtype == np.float32 and out.shape == (3, 16, 16) and out.flags.c_contiguous
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))  # bit-exact, not just close
    assert out[0, 0, 0] == 0.0 and out[0, 15, 15] == 1.0 and out[1, 0, 0] == 1.0
    assert out[0, 3, 3] == np.float32(0.2)  # byte 51 = 0.2 exactly rounded


@pytest.mark.parametrize("shape", [(32, 96, 3), (1, 1, 3), (0, 5, 3), (7, 0, 3), (5, 7, 1), (3, 4, 4)])
def test_rgb_matches_reference_random_and_degenerate(shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    out, ref = rgb_chw_float(image), rgb_chw_float_reference(image)
    assert out.shape == (shape[2], shape[0], shape[1]) and out.dtype == np.float32
    assert np.array_equal(out, ref)


def test_rgb_non_contiguous_input_and_bad_input() -> None:
    big = np.random.default_rng(1).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    view = big[::2, 5:25]  # strided rows, offset columns
    assert np.array_equal(rgb_chw_float(view), rgb_chw_float_reference(view))
    with pytest.raises(ValueError, match="uint8"):
        rgb_chw_float(big.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        rgb_chw_float(big[..., 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_matches_reference_on_injected_specials(dtype: type) -> None:
    rng = np.random.default_rng(0)
    finfo = np.finfo(dtype)
    base = rng.normal(scale=50.0, size=(17, 33)).astype(dtype)
    assert all_finite(base) and all_finite_reference(base)
    # large finite values whose sum overflows to inf, subnormals, signed zeros: still finite
    edge = np.array([finfo.max, finfo.max, -finfo.max, finfo.tiny / 4, -0.0, 0.0, finfo.min], dtype=dtype)
    assert all_finite(edge) and all_finite_reference(edge)
    for special in (np.nan, np.inf, -np.inf):
        for position in (0, 5 * 33 + 7, base.size - 1):
            bad = base.copy()
            bad.reshape(-1)[position] = special
            assert not all_finite(bad) and not all_finite_reference(bad)
    both = base.copy()
    both.reshape(-1)[[3, 4]] = (np.inf, -np.inf)  # would cancel to NaN in a sum; caught either way
    assert not all_finite(both)
    negative_nan = base.copy()
    negative_nan.reshape(-1)[9] = -np.nan  # sign bit set: still a NaN exponent
    assert not all_finite(negative_nan)


def test_all_finite_random_fuzz_against_reference() -> None:
    rng = np.random.default_rng(3)
    specials = np.array([np.nan, np.inf, -np.inf, 1e30, -1e-42, 0.0])
    for trial in range(60):
        dtype = (np.float32, np.float64)[trial % 2]
        values = rng.normal(size=int(rng.integers(0, 300))).astype(dtype)
        hits = rng.random(values.size) < rng.choice([0.0, 0.01, 0.5])
        values[hits] = rng.choice(specials, size=int(hits.sum())).astype(dtype)
        assert all_finite(values) == all_finite_reference(values)


def test_all_finite_degenerate_layouts_and_dtypes() -> None:
    assert all_finite(np.zeros(0, np.float32)) and all_finite(np.zeros((0, 3)))
    assert all_finite(np.float32(2.0)) and not all_finite(np.float64(np.nan))  # 0-d
    strided = np.ones((6, 8), np.float32)[:, ::2]
    strided_bad = strided.copy()
    strided_bad[2, 1] = np.nan
    assert all_finite(strided) and not all_finite(strided_bad[:, :])
    big = np.ones((6, 8), np.float32)
    big[0, 1] = np.inf  # hidden by the stride: not part of the view
    assert all_finite(big[:, ::2]) and not all_finite(big[:, 1::2])
    assert all_finite(np.array([1, 2], np.int32)) and all_finite(np.array([True]))
    half = np.array([1.0, np.inf], np.float16)  # no kernel for float16: the reference answers
    assert not all_finite(half) and all_finite(half[:1])
