"""Train the digits generator: a class-conditional diffusion transformer (diffusers'
DiTTransformer2DModel) on scikit-learn's 8x8 digits upsampled to 16x16, in pixel space.

    python examples/digits/train.py            # ~10 minutes on 2 CPU cores

Writes examples/digits/pipeline/ (a DiTPipeline-style folder without a VAE:
transformer/, scheduler/, model_index.json with id2label) and train_log.json.
Reproducible: the seed fixes data split, initialisation, noise and batches.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MODEL = dict(num_attention_heads=4, attention_head_dim=32, in_channels=1, out_channels=1, num_layers=4,
             sample_size=16, patch_size=2, num_embeds_ada_norm=10, norm_type="ada_norm_zero")
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                 clip_sample=True, set_alpha_to_one=True, timestep_spacing="trailing")
SAMPLING = dict(steps=25, guidance_scale=1.5)


def write_pipeline(out: Path, transformer, scheduler) -> None:
    import diffusers

    from edgegen.digits import ID2LABEL

    out.mkdir(parents=True, exist_ok=True)
    transformer.to(torch.float16).save_pretrained(out / "transformer", safe_serialization=True)
    transformer.to(torch.float32)
    scheduler.save_pretrained(out / "scheduler")
    index = {"_class_name": "DiTPipeline", "_diffusers_version": diffusers.__version__,
             "transformer": ["diffusers", "DiTTransformer2DModel"], "scheduler": ["diffusers", "DDIMScheduler"],
             "vae": [None, None], "id2label": ID2LABEL,
             "edgegen": {"space": "pixel", "null_class": MODEL["num_embeds_ada_norm"],
                         "sampling": SAMPLING}}
    (out / "model_index.json").write_text(json.dumps(index, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(HERE / "pipeline"))
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from diffusers import DDIMScheduler, DiTTransformer2DModel

    from edgegen.digits import DigitClassifier, load
    from edgegen.reference import dit_sample

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x_train, y_train = load(args.seed)["generator"]
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    model = DiTTransformer2DModel(**MODEL)
    ema = DiTTransformer2DModel(**MODEL)
    ema.load_state_dict(model.state_dict())
    ema.eval().requires_grad_(False)
    scheduler = DDIMScheduler(**SCHEDULER)
    acp = scheduler.alphas_cumprod.float()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = 100
    lr_at = lambda s: args.lr * min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa: E731
    gen = torch.Generator().manual_seed(args.seed)
    model.train()  # also enables the label dropout (10%) that trains the null class for guidance
    t0, losses = time.time(), []
    for step in range(args.steps):
        idx = torch.randint(0, len(x_train), (args.batch,), generator=gen)
        x0, y = x_train[idx], y_train[idx]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        pred = model(xt, timestep=t, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred, eps)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        losses.append(loss.item())
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {np.mean(losses[-100:]):.4f}  {time.time() - t0:6.0f}s", flush=True)
    train_s = time.time() - t0

    out = Path(args.out)
    write_pipeline(out, ema, scheduler)
    # score the model as saved (fp16 weights, run in fp32): ten samples of each digit
    saved = DiTTransformer2DModel.from_pretrained(out / "transformer", torch_dtype=torch.float32).eval()
    labels = np.repeat(np.arange(10), 10)
    noise = np.random.default_rng(args.seed).standard_normal((100, 1, 16, 16), dtype=np.float32)
    samples = dit_sample(saved, dict(scheduler.config), labels, noise, SAMPLING["steps"], SAMPLING["guidance_scale"])
    accuracy = DigitClassifier.load().accuracy(samples, labels)
    log = {"seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr, "train_seconds": round(train_s),
           "final_loss": float(np.mean(losses[-100:])), "model": MODEL, "scheduler": SCHEDULER, "sampling": SAMPLING,
           "class_accuracy_torch_100_samples": accuracy, "threads": args.threads,
           "parameters": sum(p.numel() for p in ema.parameters())}
    (HERE / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"trained in {train_s:.0f}s; class accuracy of 100 torch samples: {accuracy:.2%}; wrote {out}")


if __name__ == "__main__":
    main()
