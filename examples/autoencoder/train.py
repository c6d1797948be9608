"""Train a small convolutional autoencoder on real photographs: scikit-learn's two sample images
(china.jpg, flower.jpg), cut into 16x16 RGB patches; the decoder is TAESD-shaped (conv, residual
Blocks, nearest-neighbour Upsample -> bias-free conv), the pattern whose quantized build once failed.

    python examples/autoencoder/train.py        # about a minute on 2 CPU cores

Writes examples/autoencoder/autoencoder.safetensors (well under 1 MB) and train_log.json. Reproducible:
the seed fixes the patch split, initialisation and batches. The decoder's real weights are what
benchmarks/quant_real.py quantizes (edgegen.build_module) against its float32 output.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "autoencoder.safetensors"
PATCH = 16
LATENT = 4
C = 32


class Block(torch.nn.Module):
    """TAESD's Block: conv-ReLU-conv-ReLU-conv plus the input, then ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return torch.relu(self.conv(x) + x)


def encoder() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, C, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(C, C, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(C, C, 3, padding=1), nn.ReLU(), nn.Conv2d(C, LATENT, 3, padding=1))


def decoder() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(LATENT, C, 3, padding=1), nn.ReLU(), Block(C), nn.Upsample(scale_factor=2),
                         nn.Conv2d(C, C, 3, padding=1, bias=False), Block(C), nn.Upsample(scale_factor=2),
                         nn.Conv2d(C, C, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(C, 3, 3, padding=1))


def patches(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) 16x16 patches in [0, 1], NCHW float32: a regular grid over both photos, split 90/10."""
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:
        h, w, _ = img.shape
        for y in range(0, h - PATCH + 1, PATCH // 2):
            for x in range(0, w - PATCH + 1, PATCH // 2):
                out.append(img[y:y + PATCH, x:x + PATCH])
    data = np.stack(out).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    order = np.random.default_rng(seed).permutation(len(data))
    cut = len(data) // 10
    return data[order[cut:]], data[order[:cut]]


def load() -> tuple[torch.nn.Module, torch.nn.Module]:
    """The trained (encoder, decoder), float32, eval mode."""
    from safetensors.torch import load_file

    if not WEIGHTS.is_file():
        raise FileNotFoundError(f"{WEIGHTS} is missing: run python examples/autoencoder/train.py")
    state = load_file(str(WEIGHTS))
    enc, dec = encoder(), decoder()
    enc.load_state_dict({k.removeprefix("encoder."): v.float() for k, v in state.items() if k.startswith("encoder.")})
    dec.load_state_dict({k.removeprefix("decoder."): v.float() for k, v in state.items() if k.startswith("decoder.")})
    return enc.eval(), dec.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, test = patches(args.seed)
    enc, dec = encoder(), decoder()
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for step in range(args.steps):
        batch = torch.from_numpy(train[rng.integers(0, len(train), args.batch)])
        loss = torch.nn.functional.mse_loss(dec(enc(batch)), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.5f}", flush=True)
    with torch.no_grad():
        x = torch.from_numpy(test)
        mse = torch.nn.functional.mse_loss(dec(enc(x)).clamp(0, 1), x).item()
    psnr = 10 * np.log10(1 / mse)
    state = {f"encoder.{k}": v.contiguous() for k, v in enc.state_dict().items()}
    state.update({f"decoder.{k}": v.contiguous() for k, v in dec.state_dict().items()})
    save_file(state, str(WEIGHTS))
    log = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed, "train_patches": len(train),
           "test_patches": len(test), "test_reconstruction_psnr_db": round(float(psnr), 2),
           "parameters": sum(p.numel() for p in params), "seconds": round(time.time() - t0, 1)}
    (HERE / "train_log.json").write_text(json.dumps(log, indent=1))
    print(json.dumps(log))


if __name__ == "__main__":
    main()
