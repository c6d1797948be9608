"""Tiled VAE decode: a latent larger than the decoder's compiled input is decoded in overlapping tiles
of that input's size, blended with linear feathering over each overlap. numpy only.

The decoder's activations grow with the image (an SD 1.5 decoder at 512x512 holds 128x512x512 float32
maps, 128 MB each); decoding tiles bounds them by the tile's size. A tile sees only its own
neighbourhood: GroupNorm statistics and the mid-block's attention are taken over the tile, not the
whole latent, so the result is close to, not equal to, the untiled decode (the build records the
tile and overlap in the manifest's pipeline section as `vae_tiling`; its parity is measured in
tests/runtimes/test_vae_tiles.py and benchmarks/vae_tiles.py)."""

from __future__ import annotations

import numpy as np

from edgegen.core.errors import ArtifactError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one axis of `size` latent pixels start: every tile - overlap, the last
    one moved back so that it ends at the edge (its overlap with the one before is then larger)."""
    if not 0 <= overlap < tile <= size:
        raise ValueError(f"tiles of {tile} with an overlap of {overlap} cannot cover {size} latent pixels: "
                         f"need 0 <= overlap < tile <= size")
    stride = tile - overlap
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def feather(length: int, before: int, after: int) -> np.ndarray:
    """Weights along one axis of a tile of `length` pixels whose first `before` and last `after` pixels
    overlap its neighbours: rising linearly across the overlap, 1 elsewhere (pixel centres, so never
    0: every pixel of the image is covered by some tile with a positive weight)."""
    x = np.arange(length, dtype=np.float64) + 0.5
    w = np.ones(length)
    if before:
        w = np.minimum(w, x / before)
    if after:
        w = np.minimum(w, (length - x) / after)
    return w


def _axis(size: int, tile: int, overlap: int, factor: int) -> list[tuple[int, np.ndarray]]:
    """(start in latent pixels, image-pixel weights) for each tile along one axis."""
    starts = tile_starts(size, tile, overlap)
    out = []
    for i, s in enumerate(starts):
        before = (starts[i - 1] + tile - s) * factor if i else 0
        after = (s + tile - starts[i + 1]) * factor if i + 1 < len(starts) else 0
        out.append((s, feather(tile * factor, before, after)))
    return out


def decode_tiled(decode_tile, z: np.ndarray, tile: tuple[int, int], overlap: int, factor: int) -> np.ndarray:
    """Decode latents `z` [1, C, h, w] with `decode_tile` (latents [1, C, *tile] -> image
    [1, 3, tile * factor]) tile by tile, blended: sum(weight * tile) / sum(weight) at each pixel."""
    _, _, h, w = z.shape
    rows, cols = _axis(h, tile[0], overlap, factor), _axis(w, tile[1], overlap, factor)
    out = acc = None
    for r, wr in rows:
        for c, wc in cols:
            img = decode_tile(np.ascontiguousarray(z[:, :, r:r + tile[0], c:c + tile[1]]))
            if out is None:
                out = np.zeros((img.shape[0], img.shape[1], h * factor, w * factor))
                acc = np.zeros((h * factor, w * factor))
            if img.shape[2:] != (tile[0] * factor, tile[1] * factor):
                raise ArtifactError(f"the VAE decoder gave a {list(img.shape)} image for a {list(tile)} latent tile; "
                                    f"expected {tile[0] * factor}x{tile[1] * factor} pixels: the manifest's "
                                    f"vae_tiling does not match the decoder; rebuild the artifact.")
            weight = np.outer(wr, wc)
            ys, xs = slice(r * factor, (r + tile[0]) * factor), slice(c * factor, (c + tile[1]) * factor)
            out[:, :, ys, xs] += img * weight
            acc[ys, xs] += weight
    return (out / acc).astype(np.float32)


def tiling_of(pipeline: dict, latent_shape: tuple) -> tuple[tuple[int, int], int, int] | None:
    """(tile [h, w] in latent pixels, overlap, image pixels per latent pixel) from the manifest's
    pipeline section, or None when the artifact decodes whole latents."""
    spec = pipeline.get("vae_tiling")
    if spec is None:
        return None
    try:
        tile, overlap, factor = tuple(int(t) for t in spec["tile"]), int(spec["overlap"]), int(spec["factor"])
        for size, t in zip(latent_shape[2:], tile):
            tile_starts(size, t, overlap)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"pipeline/vae_tiling {spec!r} is not a valid tiling of latents {list(latent_shape)} "
                            f"({exc}); rebuild the artifact.") from None
    return tile, overlap, factor
