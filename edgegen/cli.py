"""The `edgegen` command. Each subcommand imports only what it needs:
`run` and `inspect` never import torch or diffusers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from edgegen.console import line
from edgegen.core.memory import format_size
from edgegen.cli_trust import add_parsers, add_trusted_key, check_trusted



def _progress(args):
    """The progress display on stderr (a bar per stepped stage on a terminal); nothing with --quiet."""
    from edgegen.console import Progress

    return Progress(quiet=getattr(args, "quiet", False))


def cmd_build(args) -> int:
    from edgegen import build

    report = build(args.model_dir, args.out, target=args.target, height=args.height, width=args.width,
                   batch=args.batch, overwrite=args.overwrite, progress=_progress(args),
                   quant=args.quant, attention=args.attention, minimum_ios=args.min_ios,
                   chunk_mb=None if args.chunk_mb == 0 else args.chunk_mb, precision=args.precision,
                   **({"guidance": args.guidance} if args.guidance else {}),
                   **({"img2img": True} if args.img2img else {}), **({"vae": args.vae} if args.vae else {}),
                   **({"memory_budget": args.memory_budget} if args.memory_budget else {}),
                   **({"vae_tile": args.vae_tile} if args.vae_tile else {}))
    result = _quant_final_check(args, report) if args.quant and args.final_check else None
    if args.sign:
        from edgegen.core.signing import sign

        sign(report.artifact, args.sign)
    if args.json:
        print(json.dumps({**report.to_json(), **({"quant_result": result} if result else {})}, indent=1))
    else:
        print(line("built", artifact=report.artifact, target=report.target, seconds=report.seconds,
                   mb=report.bytes / 1e6))
        for name, info in report.components.items():
            q = info.get("quant")
            parity = "torch-side check" if "parity_scope" in info else "parity"
            measured = "not executed here" if info["psnr_db"] is None else f"{parity} {info['psnr_db']:.1f} dB"
            print(line("built_component", name=name, mb=info["bytes"] / 1e6, measured=measured, quant=(
                (f"  {q['applied']} {q['bits_per_weight']:.2f} bits/weight" if q else "")
                + (f" ({q['bits_per_weight_quantized']:.2f} in quantized layers)"
                   if q and q.get("bits_per_weight_quantized") else ""))))
            if q and q.get("fallback_reason"):
                arrow = f" -> {q['applied']}" if q["applied"] != q["scheme"] else ""
                print(line("built_fallback", blank="", scheme=q["scheme"] + arrow, reason=q["fallback_reason"]))
        if report.memory_plan:
            mp = report.memory_plan
            print(line("built_memory", mode=mp["mode"], peak=format_size(mp["peak_bytes"]),
                       budget=format_size(mp["budget_bytes"]),
                       chunks="".join(f", {n} in {len(c)} chunks" for n, c in mp["chunks"].items())))
        if report.peak_rss_mib is not None:
            print(line("built_rss", mib=report.peak_rss_mib))
        scopes = {i["parity_scope"] for i in report.components.values() if "parity_scope" in i}
        if report.target == "coreml" and scopes:
            print(line("built_note", note="Core ML predictions need macOS: the check ran the converted modules' "
                                          "torch side"))
        elif scopes:
            print(line("built_note", note=scopes.pop()))
        if result:
            print(line("built_final_check", reference=result["reference"], steps=result["steps"],
                       db=result["final_output_psnr_db"], gate=result["gate_db"]))
    return 0 if result is None or result["passed"] else 1


def cmd_build_module(args) -> int:
    from edgegen import build_module
    from edgegen.converters.module import load_factory

    module, example_inputs, calibration = load_factory(args.factory)
    report = build_module(module, example_inputs, args.out, target=args.target, quant=args.quant,
                          calibration=calibration, overwrite=args.overwrite, progress=_progress(args))
    info = report.components["module"]
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        q = info.get("quant")
        print(line("built", artifact=report.artifact, target=report.target, seconds=report.seconds,
                   mb=report.bytes / 1e6))
        print(line("built_component", name="module", mb=info["bytes"] / 1e6,
                   measured="not executed here" if info["psnr_db"] is None else f"parity {info['psnr_db']:.1f} dB",
                   quant=f"  {q['applied']} {q['bits_per_weight']:.2f} bits/weight" if q else ""))
    return 0


QUANT_CHECK_STEPS = 10


def _quant_final_check(args, report) -> dict | None:
    """A quantized build's end-to-end effect: the final output against the float32 torch pipeline,
    recorded in the manifest (target.quant_result). None where the artifact cannot run here."""
    from edgegen import validate
    from edgegen.core.artifact import annotate
    from edgegen.core.errors import BackendUnavailableError

    from edgegen.core import Artifact

    # the model's own sampling steps where it has them (class-conditional DiTs), else QUANT_CHECK_STEPS
    steps = Artifact.open(report.artifact, verify=False).pipeline.get("sampling", {}).get("steps", QUANT_CHECK_STEPS)
    try:
        result = validate(report.artifact, args.model_dir, num_inference_steps=steps, bisect=False)
    except BackendUnavailableError as exc:
        print(line("final_not_measured", reason=exc), file=sys.stderr)
        return None
    record = {"final_output_psnr_db": round(result.image_psnr_db, 2), "steps": steps,
              "components_psnr_db": {k: round(v, 2) for k, v in result.components.items()},
              "reference": f"float32 torch ({result.device})", "gate_db": result.thresholds["image_db"],
              "passed": result.passed}
    annotate(report.artifact, "target", {"quant_result": record})
    return record


def cmd_run(args) -> int:
    from edgegen.runtimes import load

    t0 = time.perf_counter()
    pipe = load(args.artifact, threads=args.threads, trusted_keys=args.trusted_keys)
    t_load = time.perf_counter() - t0
    sampling = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "seed": args.seed,
                "scheduler": args.scheduler}
    if pipe.artifact.pipeline["kind"] == "class-conditional-dit":
        label = args.label if args.label is not None else args.prompt
        if label is None:
            raise ValueError("this artifact generates a class: pass --label ID or --prompt NAME")
        out = pipe(label, **sampling, progress=_progress(args))
    else:
        if args.prompt is None:
            raise ValueError("pass --prompt TEXT")
        image = _open_image(args.image) if args.image else None
        if image is None and args.strength is not None:
            raise ValueError("--strength applies to image-to-image: pass --image too")
        extra = {"image": image, "strength": args.strength} if image is not None else {}
        out = pipe(args.prompt, negative_prompt=args.negative_prompt, **sampling, **extra, progress=_progress(args))
    out.images[0].save(args.out)
    summary = {"image": args.out, "load_s": round(t_load, 3), **{k: round(v, 3) for k, v in out.timings.items()}}
    print(json.dumps(summary) if args.json else
          line("wrote", image=args.out, load=t_load, denoise=out.timings["denoise_s"]))
    pipe.close()
    return 0


def cmd_inspect(args) -> int:
    from edgegen.core import Artifact

    art = Artifact.open(args.artifact, verify=True, trusted_keys=args.trusted_keys)
    m = art.manifest
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    print(f"artifact   {art.root}  (schema {m['schema_version']}, created {m.get('created')})")
    tvm_target = m["target"].get("tvm_target")
    print(f"target     {m['target']['name']}  backend {m['target']['backend']}"
          + (f"  tvm {json.dumps(tvm_target)}" if tvm_target else "")
          + (f"  quant {m['target']['quant']}" if m["target"].get("quant") else "")
          + (f"  coreml {json.dumps(m['target']['coreml'])}" if m["target"].get("coreml") else ""))
    print(f"source     {m['source']['path']}  sha256 {m['source']['sha256'][:16]}…  ({m['source'].get('class')})")
    p = m["pipeline"]
    shape = ("latents", p["latent_shape"]) if "latent_shape" in p else ("samples per call", p.get("sample_shape"))
    print(f"pipeline   {p['kind']}  {p['height']}x{p['width']}  {shape[0]} {shape[1]}")
    print("toolchain  " + ", ".join(f"{k} {v}" for k, v in m["toolchain"].items()))
    print("components")
    for comp in art.components.values():
        size = sum(m["files"][f]["bytes"] for f in comp.files.values())
        parity = comp.info.get("parity_psnr_db")
        weights = f"{len(comp.weights)} weight tensors, " if comp.weights else ""
        q = comp.info.get("quant")
        print(f"  {comp.name}: {comp.family} on {comp.backend}, {size / 1e6:.2f} MB, {weights}parity {parity} dB"
              + (f", {q['applied']} at {q['bits_per_weight']} bits/weight" if q else ""))
        for kind, specs in (("in ", comp.inputs), ("out", comp.outputs)):
            for s in specs:
                print(f"      {kind} {s.name:24s} {s.dtype:8s} {list(s.shape)}")
        _print_gpu_info(comp.info)
    _print_memory_plan(m.get("memory_plan"))
    print(f"files      ({art.total_bytes() / 1e6:.2f} MB, checksums verified)")
    for rel, info in m["files"].items():
        print(f"  {rel:40s} {info['bytes']:>12,d}  sha256 {info['sha256'][:16]}…")
    return 0


def _print_memory_plan(plan: dict | None) -> None:
    """The memory plan: per phase the resident weights, the arena and the peak; every cut with its reason."""
    if not plan:
        return
    print(f"memory     {plan['mode']} plan, peak {format_size(plan['peak_bytes'])} for a budget of "
          f"{format_size(plan['budget_bytes'])}")
    for row in plan["phases"]:
        print(f"  {row['phase']:13s} {', '.join(row['components']):28s} weights {format_size(row['weight_bytes']):>9s}"
              f" + arena {format_size(row['arena_bytes']):>9s} = {format_size(row['peak_bytes']):>9s}")
    for name, entry in plan["components"].items():
        for cut in entry.get("cuts", []):
            print(f"  cut {name} after {cut['after_module']} ({format_size(cut['crossing_bytes'])} cross): "
                  f"{cut['reason']}")


def _print_gpu_info(info: dict) -> None:
    """A GPU component's plan: size, arena, edgegen's kernels and every choice and fallback, with reasons
    (identical choices counted once; `inspect --json` lists each call site)."""
    from collections import Counter

    if "launches" not in info:
        return
    print(f"      plan: {info['launches']} launches of {info['programs']} programs ({info['language']}), arena "
          f"{info['arena_bytes'] / 2**20:.2f} MiB (without reuse {info['arena_bytes_without_reuse'] / 2**20:.2f} MiB)"
          + (f"; {info['parity_scope']}" if info.get("parity_scope") else ""))
    if "weight_bytes" in info:
        p = info["precision"]
        weights, arena = info["weight_bytes"] / 2**20, info["arena_bytes"] / 2**20
        print(f"      memory: weights {weights:.2f} MiB ({info['bits_per_weight']:.2f} bits/weight, {p['weights']}) "
              f"+ arena {arena:.2f} MiB = {weights + arena:.2f} MiB planned; activations {p['activations']}, "
              f"arithmetic {p['arithmetic']}"
              + (f" (float32 kernels where {p['fallback']['when'].removeprefix('the ')})" if "fallback" in p else ""))
    if info.get("edgegen_kernels"):
        print("      edgegen kernels: " + ", ".join(f"{k} x{n}" for k, n in info["edgegen_kernels"].items()))
    sites = Counter(f"attention {a['batch_heads']}x{a['queries']}x{a['keys']} d{a['head_dim']}: {a['kernel']} "
                    f"({a['reason']})" for a in info.get("attention", []))
    sites.update(f"3x3 conv: {c['kernel']} ({c['reason']})" for c in info.get("convolutions", []))
    sites.update(f"feed-forward {f['width']}: {f['kernel']} ({f['reason']})" for f in info.get("feed_forward", []))
    for line, n in sites.items():
        print(f"      {line}" + (f"  x{n}" if n > 1 else ""))
    for g in info.get("compile_guard", []):
        print(f"      compile guard {g['function']}: {'; '.join(g['violations'])} -> {g['fallback']}: {g['result']}")


def _open_image(path):
    from PIL import Image

    return Image.open(path)


def cmd_validate(args) -> int:
    from edgegen import validate

    check_trusted(args)
    report = validate(args.artifact, args.model_dir, prompt=args.prompt, num_inference_steps=args.steps,
                      guidance_scale=args.guidance, seed=args.seed, scheduler=args.scheduler, trace=args.trace,
                      bisect=True if args.bisect else None, threads=args.threads, progress=_progress(args),
                      **({"image": _open_image(args.image), "strength": args.strength} if args.image else {}))
    if args.report:
        from edgegen.validation import write_report

        write_report(report, args.report, title=f"edgegen validate {args.artifact}")
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(line("validate_reference", device=report.device))
        if report.tokens_match is not None:
            print(line("validate_tokens", match=report.tokens_match))
        for name, db in report.components.items():
            print(line("validate_component", name=name, db=db))
        print(line("validate_steps", values=" ".join(f"{d:.1f}" for d in report.steps)))
        print(line("validate_image", db=report.image_psnr_db, gate=report.thresholds["image_db"]))
        for name, t in report.kernel_traces.items():
            over = t["first_over_limit"]
            print(line("validate_trace", name=name, kernel=t["first_nonfinite"] or "none",
                       overflow=f"{over['kernel']} (|x| {over['max_abs']:.3g})" if over else "none",
                       checked=t["kernels_checked"]))
        if report.bisect and not report.bisect["supported"]:
            print(line("validate_bisect_reason", reason=report.bisect["reason"]))
        elif report.bisect:
            from edgegen.bisect import describe

            first = report.bisect["first_divergent"]
            print(line("validate_bisect", component=report.bisect["component"],
                       compared=report.bisect["layers_compared"], gate=report.bisect["threshold_db"],
                       first=describe(first) if first else "none"))
        if args.report:
            print(line("validate_report", path=args.report))
        print(line("validate_pass") if report.passed else line("validate_fail", failures="; ".join(report.failures)))
    return 0 if report.passed else 1


def cmd_bench(args) -> int:
    from edgegen.bench import bench

    check_trusted(args)
    report = bench(args.artifact, device=args.device, runs=args.runs, warmup=args.warmup, steps=args.steps,
                   run_timeout_s=args.run_timeout, total_timeout_s=args.total_timeout, threads=args.threads,
                   native_binary=args.native_binary)
    data = report.to_json()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(data, f, indent=1)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        if report.remote:
            r = report.remote
            print(f"device {report.device}: {r.get('arch')}, {r.get('remote_binary')}; "
                  + ("artifact already there" if r.get("artifact_cached") else "artifact copied")
                  + f", {r.get('copied_bytes', 0) / 1e6:.1f} MB copied in {r.get('copy_s', 0):.1f} s")
        print(f"device {report.device}" + (f", {report.threads} threads" if report.threads else "") + ": cold start "
              f"{_fmt(report.cold_start_s, 's')}, {report.steps} steps {_fmt(report.image_s, 's')} per image, peak RSS "
              + (f"{report.peak_rss_bytes / 1e6:.0f} MB" if report.peak_rss_bytes else f"n/a ({report.memory_note})")
              + (f" (planned peak {report.planned_peak_bytes / 1e6:.2f} MB: the model's weights and arena, without "
                 f"the runtime itself)" if report.planned_peak_bytes else ""))
        print(f"  {'component':14s} {'median ms':>10s} {'min':>9s} {'max':>9s} {'IQR':>8s}  runs ok / errors")
        for name, c in data["components"].items():
            print(f"  {name:14s} {_fmt(c.get('median_ms')):>10s} {_fmt(c.get('min_ms')):>9s} "
                  f"{_fmt(c.get('max_ms')):>9s} {_fmt(c.get('iqr_ms')):>8s}  {c['runs_ok']} / {len(c['errors'])}")
        for err in report.errors:
            print(f"  error: {err}")
    return 1 if report.failed else 0


def cmd_profile(args) -> int:
    from edgegen.profiling import CATEGORIES, profile

    result = profile(args.artifact, runs=args.runs, steps=args.steps, threads=args.threads)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    if args.chart:
        _bar_chart(result["per_image"]["share"], f"time per image by operator category ({args.steps} steps)",
                   args.chart)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"on {result['threads']} CPU threads")
    print(f"{'ms':>10s} " + " ".join(f"{c:>14s}" for c in CATEGORIES))
    for name, comp in result["components"].items():
        print(f"{name:>10s} " + " ".join(f"{comp['categories_ms'][c]:14.3f}" for c in CATEGORIES))
    share = result["per_image"]["share"]
    print(f"per image ({args.steps} steps): " + ", ".join(f"{c} {100 * share[c]:.1f}%" for c in CATEGORIES))
    return 0


def _bar_chart(values: dict, title: str, path: str) -> None:
    try:
        import matplotlib
    except ImportError as exc:
        from edgegen.core.errors import MissingDependencyError

        raise MissingDependencyError("charts need matplotlib: pip install 'edgegen[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(list(values), [100 * v for v in values.values()])
    ax.set_xlabel("% of kernel time")
    ax.set_title(title)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_estimate(args) -> int:
    from edgegen.core import Artifact
    from edgegen.core.targets import device_profile
    from edgegen.profiling import estimate

    art = Artifact.open(args.artifact)
    tables = {n: c.info.get("kernels") for n, c in art.components.items()}
    missing = [n for n, t in tables.items() if not t]
    if missing:
        raise ValueError(f"components {missing} carry no kernel table (FLOPs and bytes per kernel); estimate "
                         f"needs a TVM artifact built by this edgegen: rebuild it (`edgegen build` for cpu or a GPU "
                         f"target)")
    # a GPU artifact states its own precision and arithmetic; --precision asks "what if" instead
    built = {n: c.info.get("precision") or {} for n, c in art.components.items()}
    precision = args.precision or next((b["precision"] for b in built.values() if b.get("precision")), "fp16")
    arithmetic = None if args.precision else {n: b["arithmetic"] for n, b in built.items() if b.get("arithmetic")}
    result = estimate(tables, art.pipeline, device_profile(args.device_profile), steps=args.steps,
                      precision=precision, arithmetic=arithmetic)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['device']}, {precision}, {result['kind']}")
    for name, c in result["components"].items():
        print(f"  {name:14s} {c['seconds'] * 1e3:10.2f} ms per call  ({c['gflop']:.1f} GFLOP; compute "
              f"{c['compute_bound_s'] * 1e3:.2f} ms at the {c['arithmetic']} peak, memory "
              f"{c['memory_bound_s'] * 1e3:.2f} ms)")
    print(f"  per image at {args.steps} steps: {result['image_s']:.2f} s")
    return 0


def _fmt(value, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3f}{unit}" if unit else f"{value:.2f}"


def cmd_demo(args) -> int:
    from edgegen.demo import run_demo

    result = run_demo(args.model, cache=args.cache, out=args.out, steps=args.steps, guidance=args.guidance,
                      seed=args.seed, threads=args.threads, progress=_progress(args))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(line("demo_image", image=result["image"], steps=result["steps"], guidance=result["guidance_scale"]))
        print(line("demo_accuracy", accuracy=result["class_accuracy"], images=result["images"],
                   ms=result["ms_per_image"], threads=result["threads"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgegen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build a diffusers pipeline folder into an artifact")
    b.add_argument("model_dir")
    b.add_argument("--target", default="cpu")
    b.add_argument("--out", required=True)
    b.add_argument("--height", type=int)
    b.add_argument("--width", type=int)
    b.add_argument("--batch", type=int, help="images per call for class-conditional models (default 10)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing artifact at --out")
    b.add_argument("--quant", help="quantization scheme: fp16, w8, w4g32, w4g64, w4g128, pal4, pal6, ternary, w8a8, "
                                   "mixed:<dB>; the final output is then checked against the float32 pipeline")
    b.add_argument("--precision", choices=["fp16", "fp32"],
                   help="GPU targets: fp16 stores activations and float weights as float16, and computes in float16 "
                        "where the device can (accumulators in float32); default fp16 on adreno, mali and metal, "
                        "fp32 on opencl and webgpu")
    b.add_argument("--guidance", choices=["cfg", "none"],
                   help="text-to-image: 'none' builds the UNet at batch 1 for distilled models sampled without "
                        "classifier-free guidance (LCM, Turbo); default: 'none' for an LCM scheduler, else 'cfg'")
    b.add_argument("--vae", metavar="DIR", help="text-to-image: build this AutoencoderTiny (TAESD) or AutoencoderKL "
                                                "folder as the decoder, in place of the pipeline's own VAE")
    b.add_argument("--vae-tile", type=int, metavar="N",
                   help="text-to-image: compile the VAE decoder for NxN latent tiles and decode in overlapping, "
                        "blended tiles: bounds the decoder's activations (near, not equal to, a whole decode)")
    b.add_argument("--img2img", action="store_true", help="text-to-image: also build the VAE encoder, for "
                                                          "`edgegen run --image`")
    b.add_argument("--memory-budget", metavar="SIZE",
                   help="cpu and GPU targets: the memory a run may hold, e.g. 600MB, 1.5GB (default: the device "
                        "profile's); components are loaded per phase or cut into chunks to fit it")
    b.add_argument("--attention", choices=["original", "split-einsum"], default="original",
                   help="coreml: attention layout (split-einsum suits the Apple Neural Engine)")
    b.add_argument("--min-ios", type=int, choices=[16, 17, 18], default=16, help="coreml: minimum iOS version")
    b.add_argument("--chunk-mb", type=float, default=1000.0,
                   help="coreml: cut the UNet in two when its weights exceed this many MB (0: never)")
    b.add_argument("--no-final-check", dest="final_check", action="store_false",
                   help="with --quant: skip running the artifact against the float32 pipeline afterwards")
    b.add_argument("--quiet", action="store_true", help="no progress display")
    b.add_argument("--json", action="store_true", help="print a machine-readable summary")
    b.add_argument("--sign", metavar="KEYFILE", help="sign the artifact with this private key (`edgegen keygen`)")
    b.set_defaults(func=cmd_build)
    bm = sub.add_parser("build-module", help="build any torch module, named FILE.py:FACTORY, into an artifact")
    bm.add_argument("factory", help="FILE.py:FACTORY; FACTORY() returns (module, example_inputs[, calibration])")
    bm.add_argument("--target", default="cpu")
    bm.add_argument("--out", required=True)
    bm.add_argument("--quant", help="quantization scheme (as build)")
    bm.add_argument("--overwrite", action="store_true", help="replace an existing artifact at --out")
    bm.add_argument("--quiet", action="store_true", help="no progress display")
    bm.add_argument("--json", action="store_true", help="print a machine-readable summary")
    bm.set_defaults(func=cmd_build_module)

    def sampling(p):
        p.add_argument("--prompt", help="text prompt; for class-conditional models a class name such as '7'")
        p.add_argument("--steps", type=int, help="denoising steps (default: the model's, 20 for Stable Diffusion)")
        p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--scheduler", choices=["ddim", "euler", "lcm", "euler_a", "dpm"],
                       help="override the artifact's scheduler")
        p.add_argument("--json", action="store_true")

    def runtime(p):
        p.add_argument("--runtime", choices=("python", "native"),
                       help="native: run OpenCL components on edgegen's C runtime (make native) instead of pyopencl")

    def threads(p):
        p.add_argument("--threads", type=int, help="CPU threads for the artifact's calls (default: every core this "
                                                   "process may use, from its CPU affinity and cgroup quota)")

    r = sub.add_parser("run", help="generate an image with an artifact (no torch needed)")
    r.add_argument("artifact")
    add_trusted_key(r)
    r.add_argument("--negative-prompt", default="")
    r.add_argument("--label", help="class id or name, for class-conditional models")
    r.add_argument("--out", default="image.png")
    r.add_argument("--image", help="image-to-image from this picture (the artifact's size; built with --img2img)")
    r.add_argument("--strength", type=float, help="with --image: how much of the schedule to run, 0..1 (default 0.8)")
    sampling(r)
    threads(r)
    runtime(r)
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("inspect", help="show what an artifact holds")
    i.add_argument("artifact")
    add_trusted_key(i)
    i.add_argument("--json", action="store_true", help="print the manifest")
    i.set_defaults(func=cmd_inspect)

    v = sub.add_parser("validate", help="compare an artifact with its source pipeline in torch")
    v.add_argument("artifact")
    add_trusted_key(v)
    v.add_argument("model_dir")
    v.add_argument("--report", help="write report.md, report.json and PNGs to this folder")
    v.add_argument("--bisect", action="store_true",
                   help="find the denoiser's first layer/kernel under the gate even when validation passes "
                        "(it runs by itself on a failure)")
    v.add_argument("--trace", action="store_true",
                   help="check every kernel's output for NaN/Inf and float16 overflow (TVM artifacts)")
    v.add_argument("--image", help="image-to-image from this picture (artifacts built with --img2img)")
    v.add_argument("--strength", type=float, help="with --image: 0..1 (default 0.8)")
    sampling(v)
    threads(v)
    runtime(v)
    v.set_defaults(func=cmd_validate, steps=10, prompt="a photo of an astronaut riding a horse")

    d = sub.add_parser("demo", help="build the digits generator for the CPU and draw a 10x10 grid of samples")
    be = sub.add_parser("bench", help="latency and memory, here or on a device (TVM's RPC tracker, ssh or adb)")
    be.add_argument("artifact")
    add_trusted_key(be)
    be.add_argument("--device", default="local",
                    help="local, rpc://TRACKER_HOST:PORT/KEY, ssh://[user@]host[:port] or adb://SERIAL (ssh and adb "
                         "run the native edgegen-run there: make native, or make native-aarch64)")
    be.add_argument("--native-binary", help="ssh/adb: the edgegen-run to copy to the device (e.g. one built with "
                                            "the Android NDK) instead of the one built for its architecture")
    be.add_argument("--runs", type=int, default=10)
    be.add_argument("--warmup", type=int, default=2)
    be.add_argument("--steps", type=int, default=20, help="denoising steps for the end-to-end time")
    be.add_argument("--run-timeout", type=float,
                    help="seconds to wait for one result beyond twice its expected time (default: as long as the "
                         "work takes here; 120 on a remote device)")
    be.add_argument("--total-timeout", type=float, default=1800.0, help="seconds the whole bench may take")
    threads(be)
    runtime(be)
    be.add_argument("--out", help="write the report as JSON here")
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench)

    pr = sub.add_parser("profile", help="time per operator category on this CPU (TVM artifacts)")
    pr.add_argument("artifact")
    pr.add_argument("--runs", type=int, default=3)
    pr.add_argument("--steps", type=int, default=20, help="denoising steps that weight the per-image share")
    pr.add_argument("--chart", help="write a bar chart (PNG) here")
    pr.add_argument("--out", help="write the profile as JSON here")
    pr.add_argument("--json", action="store_true")
    threads(pr)
    pr.set_defaults(func=cmd_profile)

    es = sub.add_parser("estimate", help="roofline latency on a phone GPU from the artifact's kernel table")
    es.add_argument("artifact")
    es.add_argument("--device-profile", required=True, help="adreno-740, mali-g715 or a17-pro")
    es.add_argument("--steps", type=int, default=20)
    es.add_argument("--precision", choices=["fp16", "fp32"],
                    help="count every component at this precision (default: what a GPU artifact was built with; "
                         "fp16 for a cpu artifact)")
    es.add_argument("--json", action="store_true")
    es.set_defaults(func=cmd_estimate)

    d.add_argument("--model", help="a class-conditional DiT pipeline folder (default: examples/digits/pipeline)")
    d.add_argument("--cache", default=".cache/edgegen-demo", help="where the built artifact is kept")
    d.add_argument("--out", default="demo.png")
    d.add_argument("--steps", type=int)
    d.add_argument("--guidance", type=float)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--json", action="store_true")
    threads(d)
    d.set_defaults(func=cmd_demo)
    add_parsers(sub)
    from edgegen.web import add_parser as add_web_parser

    add_web_parser(sub)
    for name, p in sub.choices.items():
        if name in ("run", "validate", "demo"):
            p.add_argument("--quiet", action="store_true", help="no progress display")
        p.add_argument("--verbose", action="store_true",
                       help="show every library's warnings and logs, unfiltered (for bug reports)")
    return parser


def main(argv=None) -> int:
    from edgegen.core.errors import EdgegenError

    args = build_parser().parse_args(argv)
    if args.verbose:
        from edgegen.core.quiet import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    runtime = getattr(args, "runtime", None)
    before = os.environ.get("EDGEGEN_RUNTIME")
    if runtime:     # read by runtimes.load_component, here and in the bench worker process
        os.environ["EDGEGEN_RUNTIME"] = runtime
    try:
        return args.func(args)
    except (EdgegenError, ValueError) as exc:
        print(line("error", command=args.command, message=exc), file=sys.stderr)
        return 2
    finally:
        if runtime:
            if before is None:
                os.environ.pop("EDGEGEN_RUNTIME", None)
            else:
                os.environ["EDGEGEN_RUNTIME"] = before
