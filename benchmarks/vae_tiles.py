"""Tiled VAE decode on an SD 1.5-shaped AutoencoderKL (diffusers' real config, random weights seeded):
parity of the tiled decode (runtimes/vae_tiles.py, the blend the artifacts' runtimes use) against
the whole decode, and each decode's peak RSS, measured in its own process (torch fp32 on the CPU:
the activations the tile bounds are the same that a compiled decoder holds in its arena).

    python benchmarks/vae_tiles.py [--latent 64] [--tiles 48,32] [--threads 2]

--latent 64 is a 512x512 image. Writes benchmarks/results/vae_tiles.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

# diffusers' AutoencoderKL config of runwayml/stable-diffusion-v1-5 (vae/config.json)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, act_fn="silu", scaling_factor=0.18215)
FACTOR = 8


def decode_once(latent: int, tile: int, threads: int, out: Path) -> dict:
    """One decode (whole where tile == 0) in this process; the image goes to `out` (.npy)."""
    import torch
    from diffusers import AutoencoderKL

    from edgegen.runtimes.vae_tiles import decode_tiled

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD15_VAE).eval()
    z = np.random.default_rng(0).standard_normal((1, 4, latent, latent), dtype=np.float32)

    def decode(t):
        with torch.no_grad():
            return vae.decoder(vae.post_quant_conv(torch.from_numpy(t))).numpy()

    t0 = time.perf_counter()
    image = decode(z) if tile == 0 else decode_tiled(decode, z, (tile, tile), max(1, tile // 4), FACTOR)
    seconds = time.perf_counter() - t0
    np.save(out, image)
    return {"tile": tile or None, "overlap": max(1, tile // 4) if tile else None, "seconds": round(seconds, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--tiles", default="48,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)      # a child process: decode with this tile
    ap.add_argument("--to", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(decode_once(args.latent, args.one, args.threads, Path(args.to))))
        return
    from edgegen.core.metrics import psnr

    tmp = Path(__file__).resolve().parent / "results" / "vae_tiles_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    rows, images = [], {}
    for tile in [0, *map(int, args.tiles.split(","))]:
        out = tmp / f"tile{tile}.npy"
        proc = subprocess.run([sys.executable, __file__, "--latent", str(args.latent), "--threads", str(args.threads),
                               "--one", str(tile), "--to", str(out)], capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        images[tile] = np.load(out)
        out.unlink()
        if tile:
            row["psnr_db_vs_whole"] = round(float(psnr(images[0], images[tile])), 2)
        rows.append(row)
        print(row, flush=True)
    tmp.rmdir()
    path = write_json("vae_tiles", {"model": "SD 1.5-shaped AutoencoderKL decoder (real config, random weights, "
                                             "seed 0)", "latent": [args.latent, args.latent],
                                    "image": [args.latent * FACTOR] * 2, "threads": args.threads, "runs": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
