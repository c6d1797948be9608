"""Signed artifacts: keygen, sign, and --trusted-key / trusted_keys= refusing anything else."""

import shutil
import time

import pytest

from edgegen.cli import main
from edgegen.core import Artifact, ArtifactError

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    assert main(["keygen", str(folder / "build.key")]) == 0
    assert main(["keygen", str(folder / "other.key")]) == 0
    return folder / "build.key", folder / "build.key.pub", folder / "other.key.pub"


@pytest.fixture(scope="module")
def signed(digits_artifact, keys, tmp_path_factory):
    art = tmp_path_factory.mktemp("signed") / "digits"
    shutil.copytree(digits_artifact, art)
    assert main(["sign", str(art), "--key", str(keys[0])]) == 0
    return art


def _copy(signed, tmp_path):
    return shutil.copytree(signed, tmp_path / "copy")


def test_untouched_signed_artifact_runs_and_is_fast(signed, keys):
    from edgegen import runtimes

    t0 = time.perf_counter()
    Artifact.open(signed, trusted_keys=[keys[1]])
    verify_s = time.perf_counter() - t0
    pipe = runtimes.load(signed, trusted_keys=[keys[1]])
    assert pipe([3], num_inference_steps=2, output_type="np").images.shape[0] == 1
    pipe.close()
    assert verify_s < 1.0


def test_sign_and_verify_take_under_a_second(digits_artifact, keys, tmp_path):
    from edgegen.core.signing import sign

    art = shutil.copytree(digits_artifact, tmp_path / "art")
    t0 = time.perf_counter()
    sign(art, keys[0])
    Artifact.open(art, trusted_keys=[keys[1]])
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("rel", ["manifest.json", "manifest.sig", "transformer/model.so",
                                 "transformer/weights.safetensors", "scheduler/scheduler_config.json"])
@pytest.mark.parametrize("where", [0, -1, "middle"])
def test_any_changed_byte_is_refused_naming_the_file(signed, keys, tmp_path, rel, where):
    from edgegen import runtimes

    art = _copy(signed, tmp_path)
    data = bytearray((art / rel).read_bytes())
    i = len(data) // 2 if where == "middle" else where
    data[i] ^= 0x01
    (art / rel).write_bytes(bytes(data))
    named = {"manifest.sig": "manifest.sig"}.get(rel, rel)
    with pytest.raises(ArtifactError, match=named.replace(".", r"\.")):
        runtimes.load(art, trusted_keys=[keys[1]])


def test_added_file_is_refused(signed, keys, tmp_path):
    art = _copy(signed, tmp_path)
    (art / "transformer" / "extra.so").write_bytes(b"\x7fELF")
    with pytest.raises(ArtifactError, match=r"transformer/extra\.so is not in the signed manifest"):
        Artifact.open(art, trusted_keys=[keys[1]])


def test_removed_signature_and_unsigned_artifacts_are_refused(signed, digits_artifact, keys, tmp_path, capsys):
    art = _copy(signed, tmp_path)
    (art / "manifest.sig").unlink()
    for path in (art, digits_artifact):
        with pytest.raises(ArtifactError, match=r"manifest\.sig is missing: the artifact is unsigned"):
            Artifact.open(path, trusted_keys=[keys[1]])
        assert main(["inspect", str(path), "--trusted-key", str(keys[1])]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unsigned" in err


def test_other_key_is_refused_and_cli_run_accepts_the_right_one(signed, keys, tmp_path, capsys):
    with pytest.raises(ArtifactError, match="not trusted here"):
        Artifact.open(signed, trusted_keys=[keys[2]])
    out = tmp_path / "seven.png"
    assert main(["run", str(signed), "--label", "7", "--steps", "2", "--out", str(out),
                 "--trusted-key", str(keys[2]), "--trusted-key", str(keys[1])]) == 0
    assert out.is_file()


def test_keygen_never_overwrites(keys):
    assert main(["keygen", str(keys[0])]) == 2


@pytest.mark.parametrize("command", ["run", "bench", "validate", "inspect"])
def test_every_command_that_opens_an_artifact_takes_trusted_key(digits_artifact, digits_model_dir, keys, command,
                                                                 capsys):
    extra = [str(digits_model_dir)] if command == "validate" else []
    assert main([command, str(digits_artifact), *extra, "--trusted-key", str(keys[1])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.sig is missing: the artifact is unsigned" in err
