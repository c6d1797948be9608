"""Weight quantizers: stored bits per weight, and round-trip error within each scheme's bound."""

import numpy as np
import pytest

from edgegen.core.quant import dequantize_weight, parse, quantize_weight

RNG = np.random.default_rng(0)
CONV = RNG.standard_normal((64, 32, 3, 3)).astype(np.float32)     # [O, I, kh, kw], 288 per output channel
LINEAR = RNG.standard_normal((256, 96)).astype(np.float32)        # [in, out]: output axis 1


def snr_db(ref, got):
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))


def grouped(bits, group, width=288):
    """Stored bits per weight with rows padded to whole groups and one fp16 scale per group."""
    groups = -(-width // group)
    return (groups * group * bits + groups * 16) / width


@pytest.mark.parametrize("name,bits,min_snr", [
    ("fp16", 16.0, 60), ("w8", 8 + 16 / 288, 38), ("w4g32", grouped(4, 32), 17), ("w4g64", grouped(4, 64), 16),
    ("w4g128", grouped(4, 128), 15), ("pal6", 6 + 64 * 16 / (16 * 288), 26), ("pal4", 4 + 16 * 16 / (4 * 288), 18),
    ("ternary", grouped(2, 64), 4)])
def test_round_trip_and_stored_bits(name, bits, min_snr):
    scheme = parse(name)
    packed = quantize_weight(CONV, scheme, out_axis=0)
    assert packed.bits_per_weight == pytest.approx(bits, abs=0.01)
    back = dequantize_weight(packed, out_axis=0)
    assert back.shape == CONV.shape and back.dtype == np.float32
    assert snr_db(CONV, back) > min_snr
    lin = dequantize_weight(quantize_weight(LINEAR, scheme, out_axis=1), out_axis=1)
    assert lin.shape == LINEAR.shape and snr_db(LINEAR, lin) > min_snr - 1


def test_codes_are_the_nearest_grid_points():
    w = np.array([[0.0, 1.0, -1.0, 0.49, 0.51, -0.2] + [0.0] * 26], np.float32)   # one group of 32
    back = dequantize_weight(quantize_weight(w, parse("ternary")))
    scale = np.abs(w).mean()
    np.testing.assert_allclose(back[0, :6], np.clip(np.round(w[0, :6] / scale), -1, 1) * np.float16(scale),
                               rtol=1e-3)
    w8 = dequantize_weight(quantize_weight(w, parse("w8")))
    assert np.abs(w8 - w).max() <= np.float16(1 / 127) / 2 + 1e-4
    pal = dequantize_weight(quantize_weight(np.tile(np.arange(16, dtype=np.float32), (2, 4)), parse("pal4")))
    np.testing.assert_allclose(pal, np.tile(np.arange(16, dtype=np.float32), (2, 4)), atol=1e-2)  # 16 values fit


def test_activation_and_mixed_schemes_are_not_per_tensor():
    for name in ("w8a8", "mixed:30"):
        with pytest.raises(ValueError, match="not a weight-only scheme"):
            quantize_weight(CONV, parse(name))


def test_palette_tables_are_shared_only_where_they_would_cost_too_much():
    from edgegen.core.quant import PALETTE_TABLE_BITS, palette_share

    assert palette_share(320, 2880, 4) == 1                   # wide conv rows: a table per channel
    assert palette_share(64, 288, 6) == 16                    # 64 entries x 16 bits over 16 x 288 weights
    for rows, width, bits in [(64, 288, 6), (96, 256, 4), (7, 5, 6)]:
        share = palette_share(rows, width, bits)
        packed = quantize_weight(RNG.standard_normal((rows, width)).astype(np.float32), parse(f"pal{bits}"))
        assert packed.arrays["lut"].shape == (rows // share, 2 ** bits)
        assert rows % share == 0
        assert share == rows or (2 ** bits) * 16 / (share * width) <= PALETTE_TABLE_BITS


def test_rows_narrower_than_the_group_are_one_group():
    w = RNG.standard_normal((8, 32)).astype(np.float32)
    for name in ("w4g128", "ternary"):
        packed = quantize_weight(w, parse(name))
        assert packed.bits_per_weight == pytest.approx((4 if name != "ternary" else 2) + 16 / 32)
        assert dequantize_weight(packed).shape == w.shape
