"""The digits generator: a trained DiT, built for the CPU, must still draw the digits asked for."""

import json

import numpy as np
import pytest

import edgegen
from edgegen.cli import main
from edgegen.digits import DigitClassifier

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]

# 20 samples (two of each digit): the trained model scores ~0.9+, chance is 0.1.
ACCURACY_GATE = 0.7
LABELS = np.repeat(np.arange(10), 2)


def _torch_samples(transformer, model_dir, noise, steps=25, guidance=1.5):
    from edgegen.reference import dit_sample

    config = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    return dit_sample(transformer, config, LABELS, noise, steps, guidance)


def test_artifact_draws_the_digits_asked_for(digits_artifact, digits_model_dir):
    import torch
    from diffusers import DiTTransformer2DModel

    clf = DigitClassifier.load()
    pipe = edgegen.runtimes.load(digits_artifact)
    noise = np.random.default_rng(0).standard_normal((len(LABELS), 1, 16, 16), dtype=np.float32)
    art = pipe(LABELS.tolist(), num_inference_steps=25, guidance_scale=1.5, noise=noise, output_type="np")
    assert art.images.shape == (20, 16, 16, 1)
    art_acc = clf.accuracy(art.images, LABELS)
    assert art_acc >= ACCURACY_GATE

    trained = DiTTransformer2DModel.from_pretrained(digits_model_dir / "transformer", torch_dtype=torch.float32).eval()
    torch_acc = clf.accuracy(_torch_samples(trained, digits_model_dir, noise), LABELS)
    assert abs(art_acc - torch_acc) <= 0.1  # same seeds: at most two of 20 samples may flip
    assert edgegen.core.psnr((_torch_samples(trained, digits_model_dir, noise) + 1) / 2,
                             (art.latents + 1) / 2, peak=1.0) >= 35.0

    # the gate is not one a broken model passes: the same architecture with random weights fails it
    torch.manual_seed(0)
    random = DiTTransformer2DModel.from_config(trained.config).eval()
    for p in random.parameters():  # DiT zero-initialises its output layers; give them weights too
        torch.nn.init.normal_(p, std=0.02)
    assert clf.accuracy(_torch_samples(random, digits_model_dir, noise), LABELS) < ACCURACY_GATE


def test_labels_by_name_and_padding(digits_artifact):
    pipe = edgegen.runtimes.load(digits_artifact)
    out = pipe(["7", "seven", 7], num_inference_steps=5, seed=1, output_type="np")
    assert out.images.shape == (3, 16, 16, 1)  # three images from one batch of ten
    np.testing.assert_array_equal(pipe.label_ids(["7", "seven", 7]), [7, 7, 7])
    with pytest.raises(edgegen.core.InputError, match="unknown class label 'eleven'"):
        pipe("eleven")
    with pytest.raises(edgegen.core.InputError, match="out of range"):
        pipe(12)


def test_validate_dit(digits_artifact, digits_model_dir):
    report = edgegen.validate(digits_artifact, digits_model_dir, num_inference_steps=8, seed=2)
    assert report.passed, report.to_json()
    assert set(report.components) == {"transformer"} and len(report.steps) == 8


def test_cli_run_label_and_demo(digits_artifact, tmp_path, capsys):
    from PIL import Image

    assert main(["run", str(digits_artifact), "--label", "3", "--out", str(tmp_path / "3.png"), "--json"]) == 0
    capsys.readouterr()
    assert Image.open(tmp_path / "3.png").size == (16, 16)
    assert main(["run", str(digits_artifact), "--prompt", "nine", "--out", str(tmp_path / "9.png")]) == 0
    capsys.readouterr()
    # the demo reuses the cached build (it is current for the committed model)
    assert main(["demo", "--cache", str(digits_artifact.parent), "--out", str(tmp_path / "demo.png"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["built_seconds"] is None and result["images"] == 100
    assert result["class_accuracy"] >= 0.8
    assert Image.open(tmp_path / "demo.png").size == (4 * (10 * 17 - 1),) * 2  # 10 tiles of 16 px, 1 px gaps, x4


def test_threads_used_are_reported(digits_artifact):
    """The transformer runs on every core this process may use unless asked for fewer; a session that
    asked for all gets them back after another one asked for one."""
    import os

    from edgegen.core.cpus import available_cores
    from edgegen.profiling import profile
    from edgegen.runtimes.tvm_import import import_tvm

    every = int(os.environ.get("TVM_NUM_THREADS", available_cores()))
    pipe = edgegen.runtimes.load(digits_artifact)
    assert edgegen.runtimes.threads_used(pipe.sessions.values()) == every
    assert profile(digits_artifact, runs=1, steps=2, threads=1)["threads"] == 1
    pipe(list(range(10)), num_inference_steps=1)
    assert import_tvm().runtime.num_threads() == every
    pipe.close()
