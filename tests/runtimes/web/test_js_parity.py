"""The browser runtime's host-side code (runtimes/web/numerics.js, checks.js) run by Node against edgegen's
Python: seeded noise bit for bit, the schedulers to float32 rounding, and the artifact checks rejecting what
the Python checks reject. No browser needed: these modules touch no WebGPU."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgegen.core.errors import ArtifactError
from edgegen.core.launch_plan import check_plan
from edgegen.core.manifest_check import SCHEMA_DIR, check_manifest, check_schema
from edgegen.runtimes.noise import normal
from edgegen.runtimes.schedulers import make_scheduler

WEB = Path(__file__).resolve().parents[3] / "runtimes" / "web"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs node: apt-get install nodejs (scripts/install_system_deps.sh)")

# reads {"cases": ...} on stdin, writes one result per case
RUNNER = """
import {normal, makeScheduler} from "%(web)s/numerics.js";
import {Schema, checkManifest, checkPlan} from "%(web)s/checks.js";
import {CLIPTokenizer} from "%(web)s/tokenizer.js";
import fs from "fs";
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const schemas = Object.fromEntries(Object.entries(input.schemas).map(([k, v]) => [k, new Schema(k, v)]));
const out = input.cases.map((c) => { try { return run(c); } catch (e) { return `${e.name}: ${e.message}`; } });
process.stdout.write(JSON.stringify(out));

function run(c) {
  if (c.kind === "noise") return Array.from(normal(BigInt(c.seed), c.count));
  if (c.kind === "tokenizer") {
    const tok = new CLIPTokenizer(JSON.parse(fs.readFileSync(c.vocab, "utf8")), fs.readFileSync(c.merges, "utf8"), c.options);
    return Array.from(tok.call(c.texts));
  }
  if (c.kind === "scheduler") {
    const s = makeScheduler(c.config, c.override);
    s.setTimesteps(c.steps);
    let x = Float32Array.from(normal(1n, 64), (v) => Math.fround(v * Math.fround(s.initNoiseSigma)));
    s.timesteps.forEach((t, i) => { s.scaleModelInput(x, i); x = s.step(normal(BigInt(100 + i), 64), i, x); });
    return {timesteps: Array.from(s.timesteps), sigma: s.initNoiseSigma, x: Array.from(x),
            scaled: Array.from(s.scaleModelInput(normal(5n, 8), 0))};
  }
  if (c.kind === "scheduler_config") { schemas[c.kind].check(c.document, c.kind); return "ok"; }
  (c.kind === "manifest" ? checkManifest : checkPlan)(c.document, schemas, c.kind);
  return "ok";
}
"""


def _node(cases: list) -> list:
    schemas = {p.name.split(".")[0]: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.schema.json")}
    proc = subprocess.run([NODE, "--input-type=module", "-e", RUNNER % {"web": WEB.as_uri()}],
                          input=json.dumps({"cases": cases, "schemas": schemas}), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_noise_is_bit_identical():
    seeds = [0, 1, 123456789, 2**63, 2**64 - 1]
    counts = [1, 7, 2560]
    got = _node([{"kind": "noise", "seed": str(s), "count": n} for s in seeds for n in counts])
    for (s, n), values in zip([(s, n) for s in seeds for n in counts], got):
        np.testing.assert_array_equal(np.asarray(values, np.float32), normal(s, n), err_msg=f"seed {s}, {n} values")


DIGITS = {"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2", "clip_sample": True,
          "set_alpha_to_one": True, "timestep_spacing": "trailing", "num_train_timesteps": 1000}
SD = {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012, "timestep_spacing": "leading", "steps_offset": 1, "num_train_timesteps": 1000}
CONFIGS = [
    (DIGITS, None),
    ({**DIGITS, "beta_schedule": "linear", "timestep_spacing": "leading", "steps_offset": 1,
      "set_alpha_to_one": False, "prediction_type": "v_prediction"}, None),
    ({**DIGITS, "beta_schedule": "scaled_linear", "timestep_spacing": "linspace", "clip_sample": False,
      "prediction_type": "sample"}, None),
    (SD, None),
    (SD, "ddim"),
    ({**SD, "timestep_spacing": "linspace", "prediction_type": "v_prediction"}, None),
    ({**SD, "timestep_spacing": "trailing", "prediction_type": "sample", "num_train_timesteps": 999}, None),
]


def _numpy_run(config, override, steps):
    s = make_scheduler(config, override)
    s.set_timesteps(steps)
    x = (normal(1, 64) * np.float32(s.init_noise_sigma)).astype(np.float32)
    for i in range(len(s.timesteps)):
        x = s.step(normal(100 + i, 64), i, x)
    return s, x


@pytest.mark.parametrize("steps", [1, 7, 25])
def test_schedulers_equal_numpy(steps):
    got = _node([{"kind": "scheduler", "config": c, "override": o, "steps": steps} for c, o in CONFIGS])
    for (config, override), js in zip(CONFIGS, got):
        s, x = _numpy_run(config, override, steps)
        assert js["timesteps"] == s.timesteps.tolist(), (config, override)
        assert js["sigma"] == pytest.approx(float(s.init_noise_sigma), rel=1e-7)
        np.testing.assert_allclose(np.asarray(js["x"], np.float32), x, rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(np.asarray(js["scaled"], np.float32), s.scale_model_input(normal(5, 8), 0),
                                   rtol=1e-7, atol=0)


def test_unsupported_scheduler_options_are_refused_by_name():
    got = _node([{"kind": "scheduler", "config": {**DIGITS, "thresholding": True}, "override": None, "steps": 2},
                 {"kind": "scheduler", "config": {**DIGITS, "_class_name": "PNDMScheduler"}, "override": None, "steps": 2},
                 {"kind": "scheduler", "config": DIGITS, "override": "unipc", "steps": 2}])
    assert got[0].startswith("ConfigError: DDIM scheduler option thresholding=true is not implemented"), got[0]
    assert got[1].startswith('ConfigError: scheduler "PNDMScheduler" is not implemented'), got[1]
    assert got[2].startswith('ConfigError: unknown scheduler "unipc"'), got[2]


PLAN = {
    "format": "edgegen-launch-plan", "version": 1, "language": "wgsl", "arena_bytes": 512,
    "tensors": {
        "x": {"shape": [4], "dtype": "float32", "bytes": 16, "storage": "arena", "offset": 0},
        "y": {"shape": [2, 2], "dtype": "float32", "bytes": 16, "storage": "arena", "offset": 256},
        "w": {"shape": [4], "dtype": "float32", "bytes": 16, "storage": "weight"},
        "v": {"shape": [4], "dtype": "float32", "bytes": 16, "storage": "view", "of": "y"},
    },
    "inputs": {"x": "x"}, "outputs": {"y": "y"},
    "programs": {"p": {"kernels": ["k"]}},
    "launches": [{"program": "p", "kernel": "k", "args": ["v", "x", "w"], "scalars": [{"dtype": "int32", "value": 3}],
                  "grid": [1, 1, 1], "block": [4, 1, 1]}],
}
SHA = "0" * 64
MANIFEST = {
    "format": "edgegen-artifact", "schema_version": 1,
    "pipeline": {"kind": "class-conditional-dit", "scheduler_config": "scheduler/scheduler_config.json",
                 "height": 16, "width": 16, "batch": 2, "sample_shape": [2, 1, 16, 16], "in_channels": 1,
                 "null_class": 10, "id2label": {"0": "0, zero", "9": "9, nine"},
                 "sampling": {"steps": 25, "guidance_scale": 1.5}},
    "components": {"transformer": {
        "backend": "webgpu", "family": "DiTTransformer2DModel",
        "files": {"plan": "transformer/plan.json", "kernels": "transformer/kernels.wgsl",
                  "weights": "transformer/weights.safetensors"},
        "inputs": [{"name": "sample", "dtype": "float32", "shape": [4, 1, 16, 16]},
                   {"name": "class_labels", "dtype": "int32", "shape": [4], "range": [0, 10]}],
        "outputs": [{"name": "noise_pred", "dtype": "float32", "shape": [4, 1, 16, 16]}]}},
    "files": {f: {"sha256": SHA, "bytes": 1} for f in ("transformer/plan.json", "transformer/kernels.wgsl",
                                                       "transformer/weights.safetensors",
                                                       "scheduler/scheduler_config.json")},
}


def _edit(document, path: str, value):
    """A copy of `document` with the field at `path` ('a/b/0'; '~1' stands for '/' in a key) set to `value`
    (None: removed)."""
    doc = copy.deepcopy(document)
    *parents, last = [key.replace("~1", "/") for key in path.split("/")]
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = int(last) if isinstance(node, list) else last
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


MANIFEST_EDITS = [
    ("format", "other"), ("schema_version", 2), ("files/..~1evil", {"sha256": SHA, "bytes": 1}),
    ("files/a~1~1b", {"sha256": SHA, "bytes": 1}), ("files/transformer~1plan.json", None),
    ("components/transformer/files/plan", "transformer/missing.json"),
    ("components/transformer/inputs/0/dtype", "float64"), ("components/transformer/inputs/0/extra", 1),
    ("components/transformer/inputs/0/range", [0, 1]), ("components/transformer/inputs/1/range", [5, 1]),
    ("components/transformer/inputs/1/name", "sample"), ("components/transformer/inputs/0/shape", [0, 16]),
    ("components/transformer/outputs", []), ("components/bad name!", {}),
    ("pipeline/batch", 3), ("pipeline/id2label/10", "ten"), ("pipeline/null_class", 0), ("pipeline/sampling/steps", 0),
    ("pipeline/kind", "stable-diffusion"), ("pipeline/scheduler_config", "../x.json"),
    ("files/transformer~1kernels.wgsl/sha256", "ABC"), ("files/transformer~1kernels.wgsl/bytes", -1),
]
PLAN_EDITS = [
    ("format", "x"), ("version", 2), ("language", "glsl"), ("arena_bytes", -1),
    ("tensors/x/bytes", 12), ("tensors/x/dtype", "float64"), ("tensors/y/offset", 500), ("tensors/x/offset", None),
    ("tensors/v/of", "nope"), ("tensors/y", {"shape": [4], "dtype": "float32", "bytes": 16, "storage": "view", "of": "v"}),
    ("tensors/v/shape", [8]), ("outputs/y", "w"), ("inputs/x", "nope"),
    ("launches/0/args/1", "nope"), ("launches/0/program", "q"), ("launches/0/kernel", "k2"),
    ("launches/0/scalars/0/value", 1.5), ("launches/0/scalars/0/value", 2**31), ("launches/0/grid", [0, 1, 1]),
    ("launches/0/grid", [2**20, 2**11, 1]), ("launches/0/args", []), ("programs/1p", {"kernels": ["k"]}),
    ("launches", []),
]


def _python_rejects(kind: str, document) -> bool:
    try:
        (check_manifest if kind == "manifest" else check_plan)(document, kind)
    except ArtifactError:
        return True
    return False


def test_checks_reject_what_python_rejects():
    cases = [("manifest", MANIFEST), ("plan", PLAN)]
    for kind, base, edits in (("manifest", MANIFEST, MANIFEST_EDITS), ("plan", PLAN, PLAN_EDITS)):
        cases += [(kind, _edit(base, path, value)) for path, value in edits]
    got = _node([{"kind": k, "document": d} for k, d in cases])
    for (kind, document), js in zip(cases, got):
        python = _python_rejects(kind, document)
        assert (js != "ok") == python, (kind, js, python)
        if python:
            assert js.startswith("ArtifactError: ") and "rebuild the artifact" in js, js
    assert got[0] == "ok" and got[1] == "ok"
    assert sum(r != "ok" for r in got) == len(MANIFEST_EDITS) + len(PLAN_EDITS)



FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "shift_terminal": None,
        "use_dynamic_shifting": False, "base_image_seq_len": 256}
SCHEDULER_EDITS = [("shift_terminal", 0.02), ("shift_terminal", "x"), ("shift_terminal", 1.5), ("shift", 0),
                   ("use_dynamic_shifting", 1), ("base_image_seq_len", 2.5), ("_class_name", None)]


def test_scheduler_config_checks_equal_python():
    """The declared scheduler_config schema (a type list among its keywords) means the same in both."""
    documents = [FLOW] + [_edit(FLOW, path, value) for path, value in SCHEDULER_EDITS]
    got = _node([{"kind": "scheduler_config", "document": d} for d in documents])
    for document, js in zip(documents, got):
        try:
            check_schema(document, "scheduler_config", "scheduler_config")
            python = "ok"
        except ArtifactError:
            python = "rejected"
        assert (js == "ok") == (python == "ok"), (document, js)
    assert got[:2] == ["ok", "ok"] and got.count("ok") == 2


PROMPTS = [
    "", "a photo of an astronaut riding a horse", "A PAINTING   of a Red fox,\tin the snow!!",
    "it's the city's lights at night \u2014 na\u00efve caf\u00e9 42", "emoji \U0001F680 and \u00fcn\u00efc\u00f6d\u00e9",
    "cafe\u0301 (NFC) \u0085next\u00a0line\ufeffbom", "!!'s ''quoted'' 2024-12-03 \u0130stanbul \u03a3\u039f\u03a3",
    " ".join(["astronaut"] * 100),  # longer than 77 tokens: truncated with EOS kept
]


def test_tokenizer_equals_python(tmp_path):
    from edgegen.runtimes.tokenizer import CLIPTokenizer
    from edgegen.testing.tiny import BOS, EOS, make_clip_tokenizer_files

    make_clip_tokenizer_files(tmp_path)
    ours = CLIPTokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt", max_length=77, bos_token=BOS,
                         eos_token=EOS, pad_token=EOS, unk_token=EOS)
    options = {"maxLength": 77, "bosToken": BOS, "eosToken": EOS, "padToken": EOS, "unkToken": EOS}
    got = _node([{"kind": "tokenizer", "vocab": str(tmp_path / "vocab.json"), "merges": str(tmp_path / "merges.txt"),
                  "options": options, "texts": PROMPTS}])[0]
    np.testing.assert_array_equal(np.asarray(got, np.int32).reshape(len(PROMPTS), 77), ours(PROMPTS))
