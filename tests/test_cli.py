"""The command line as a user types it."""

import json

import numpy as np
import pytest

from edgegen.cli import main

pytestmark = [pytest.mark.tvm, pytest.mark.slow]


def test_run_writes_png(tiny_artifact, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "img.png"
    assert main(["run", str(tiny_artifact), "--prompt", "a cat", "--steps", "3", "--seed", "1",
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["image"] == str(out) and summary["denoise_s"] > 0
    img = np.asarray(Image.open(out))
    assert img.shape == (32, 32, 3) and img.std() > 0


def test_inspect(tiny_artifact, capsys):
    assert main(["inspect", str(tiny_artifact)]) == 0
    text = capsys.readouterr().out
    for needle in ("target     cpu", "unet: UNet2DConditionModel on tvm_vm", "in  sample", "apache-tvm 0.27",
                   "checksums verified", "unet/weights.safetensors"):
        assert needle in text
    assert main(["inspect", str(tiny_artifact), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema_version"] == 1


def test_errors_exit_nonzero_with_message(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err
