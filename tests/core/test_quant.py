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
    back = dequantize_weight(quantize_weight(w, parse("ternary-rtn")))     # the round-to-nearest method
    scale = np.abs(w).mean()
    np.testing.assert_allclose(back[0, :6], np.clip(np.round(w[0, :6] / scale), -1, 1) * np.float16(scale),
                               rtol=1e-3)
    w8 = dequantize_weight(quantize_weight(w, parse("w8-rtn")))
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


def _inputs(width: int, n: int = 2048, corr: float = 0.3) -> np.ndarray:
    """Layer inputs with uneven channel magnitudes (a few large ones, as real activations have) and
    correlated channels: what the calibrated methods exploit."""
    rng = np.random.default_rng(3)
    mix = np.eye(width) + corr * rng.standard_normal((width, width)) / np.sqrt(width)
    return (rng.standard_normal((n, width)) @ mix) * np.exp(rng.standard_normal(width))


@pytest.mark.parametrize("name", ["w4g32", "w4g128", "w8", "ternary", "pal4"])
def test_calibrated_methods_beat_round_to_nearest_on_the_layer_output(name):
    from edgegen.core.quant import LayerStats, layer_error

    w = RNG.standard_normal((48, 128)).astype(np.float32)
    stats = LayerStats.of(_inputs(128))
    rtn = quantize_weight(w, parse(f"{name}-rtn"))
    best = quantize_weight(w, parse(name), stats=stats)
    assert rtn.method in ("rtn", "kmeans") and best.method in ("search", "gptq", "weighted-kmeans", "gptq-palette")
    assert best.bits_per_weight == rtn.bits_per_weight     # the same stored form
    err_rtn = layer_error(w, dequantize_weight(rtn), stats)
    err_best = layer_error(w, dequantize_weight(best), stats)
    gain_db = 10 * np.log10(err_rtn / err_best)
    assert gain_db > (0.5 if name == "w8" else 2.0), (name, best.method, gain_db)
    # the error model is the real one: the layer's outputs on the inputs themselves
    x = _inputs(128)
    measured = np.mean((x @ w.T - x @ dequantize_weight(best).T) ** 2)
    assert measured == pytest.approx(err_best, rel=1e-6)


def test_gptq_compensates_what_search_cannot():
    """On correlated inputs GPTQ's error feedback beats the best scales alone, and `best` picks it."""
    from edgegen.core.quant import LayerStats, _gptq, _search, layer_error

    w = RNG.standard_normal((32, 256))
    stats = LayerStats.of(_inputs(256, corr=2.0))
    scheme = parse("w4g32")
    errors = {p.method: layer_error(w, dequantize_weight(p), stats)
              for p in (_search(w, scheme, stats, w.shape), _gptq(w, scheme, stats, w.shape))}
    assert errors["gptq"] < 0.8 * errors["search"], errors
    assert quantize_weight(w, scheme, stats=stats).method == "gptq"


def test_kmeans_assigns_each_value_to_its_nearest_centroid():
    from edgegen.core.quant import _assign, _kmeans_1d

    values = RNG.standard_normal((7, 500)) * np.arange(1, 8)[:, None]
    lut, idx = _kmeans_1d(values, 16)
    assert np.all(np.diff(lut, axis=1) >= 0)
    brute = np.abs(values[:, :, None] - lut[:, None, :].astype(np.float64)).argmin(axis=2)
    np.testing.assert_array_equal(np.take_along_axis(lut, idx, 1), np.take_along_axis(lut, brute, 1))
    assert np.array_equal(_assign(values, lut.astype(np.float64)), idx)


@pytest.mark.parametrize("name", ["w4g32", "w8"])
def test_awq_scales_are_taken_only_where_they_lower_the_layer_output_error(name):
    """AWQ's input-channel scales: the scaled weight W diag(s) divided back by s is the layer's weight, with
    less output error than the unscaled best method on inputs whose channels differ in magnitude; on inputs
    of one magnitude there is nothing to weigh and the unscaled weight is kept."""
    from edgegen.core.quant import LayerStats, layer_error, quantize_scaled

    w = RNG.standard_normal((48, 128)).astype(np.float32)
    stats = LayerStats.of(_inputs(128, corr=0.0) * np.exp(2 * RNG.standard_normal(128)))
    base = quantize_weight(w, parse(name), stats=stats)
    packed, s = quantize_scaled(w, parse(name), stats, 128)
    assert s is not None and s.shape == (128,) and packed.method.endswith("+awq")
    assert packed.bits_per_weight == base.bits_per_weight
    back = dequantize_weight(packed) / s
    assert np.median(np.abs(back - w)) < 0.2 * np.abs(w).max()     # the same layer (coarser on quiet channels)
    assert layer_error(w, back, stats) < layer_error(w, dequantize_weight(base), stats)
    flat = LayerStats(np.ones(128), np.eye(128))
    packed, s = quantize_scaled(w, parse(name), flat, 128)
    assert s is None and "+awq" not in packed.method
    # round-to-nearest keeps the old method exactly, and a conv's scales are one per input channel
    assert quantize_scaled(w, parse(f"{name}-rtn"), stats, 128)[1] is None
    conv = RNG.standard_normal((16, 8, 3, 3)).astype(np.float32)
    conv_stats = LayerStats.of(RNG.standard_normal((4096, 72)) * np.repeat(np.exp(2 * RNG.standard_normal(8)), 9))
    packed, s = quantize_scaled(conv, parse(name), conv_stats, 8)
    assert s is not None and s.shape == (8,)
    rows = conv.reshape(16, -1)
    assert layer_error(rows, (dequantize_weight(packed) / s[None, :, None, None]).reshape(16, -1), conv_stats) < \
        layer_error(rows, dequantize_weight(quantize_weight(conv, parse(name), stats=conv_stats)).reshape(16, -1),
                    conv_stats)
