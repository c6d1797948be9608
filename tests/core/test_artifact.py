import json
import shutil

import numpy as np
import pytest

from edgegen.core import SCHEMA_VERSION, Artifact, ArtifactError, ArtifactWriter, Component, TensorSpec
from edgegen.core import safetensors_io


def _write(dest, overwrite=False, fail=False):
    weights = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, np.float16)}
    with ArtifactWriter(dest, overwrite=overwrite) as w:
        w.path("m/model.bin").write_bytes(b"\x7fELF" + bytes(range(200)))
        safetensors_io.save(weights, w.path("m/weights.safetensors"))
        if fail:
            raise RuntimeError("compile failed")
        w.add_component(Component(
            name="m", backend="tvm_vm", family="Toy", files={"library": "m/model.bin", "weights": "m/weights.safetensors"},
            inputs=[TensorSpec("x", "float32", (1, 3))], outputs=[TensorSpec("y", "float32", (1, 4))],
            weights=[TensorSpec.of(k, v) for k, v in weights.items()]))
        return w.commit(pipeline={"kind": "toy"}, target={"name": "cpu"})


def test_round_trip(tmp_path):
    dest = _write(tmp_path / "art")
    art = Artifact.open(dest)
    assert art.manifest["schema_version"] == SCHEMA_VERSION
    comp = art.component("m")
    assert comp.inputs == [TensorSpec("x", "float32", (1, 3))]
    loaded = safetensors_io.load(art.file(comp.files["weights"]))
    np.testing.assert_array_equal(loaded["w"], np.arange(12, dtype=np.float32).reshape(3, 4))
    assert loaded["b"].dtype == np.float16


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        _write(tmp_path / "art", fail=True)
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_needs_overwrite(tmp_path):
    dest = _write(tmp_path / "art")
    with pytest.raises(ArtifactError, match="already exists"):
        _write(dest)
    _write(dest, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


@pytest.fixture
def art(tmp_path):
    return _write(tmp_path / "art")


def test_missing_manifest(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        Artifact.open(tmp_path / "half")


def test_manifest_not_json(art):
    (art / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact.open(art)


def test_newer_schema(art):
    m = json.loads((art / "manifest.json").read_text())
    m["schema_version"] = SCHEMA_VERSION + 1
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"newer than this edgegen reads.*Upgrade edgegen"):
        Artifact.open(art)


def test_truncated_file(art):
    path = art / "m" / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="truncated"):
        Artifact.open(art)


def test_edited_file_same_size(art):
    path = art / "m" / "model.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        Artifact.open(art)


def test_missing_file(art):
    (art / "m" / "model.bin").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Artifact.open(art)


def test_weight_spec_mismatch(art):
    """A weights file replaced by a consistent but different one fails its spec check."""
    m = json.loads((art / "manifest.json").read_text())
    m["components"]["m"]["weights"][0]["shape"] = [4, 3]
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="weight 'w' is float32\\[3, 4\\]"):
        Artifact.open(art)


def test_unknown_component(art):
    with pytest.raises(ArtifactError, match="no component 'unet'"):
        Artifact.open(art).component("unet")


def test_safetensors_interop(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = {"a": np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32),
              "i": np.arange(7, dtype=np.int64), "h": np.ones((3,), np.float16)}
    safetensors_io.save(arrays, tmp_path / "ours.safetensors")
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    st.save_file(arrays, str(tmp_path / "theirs.safetensors"))
    ours = safetensors_io.load(tmp_path / "theirs.safetensors")
    for k, v in arrays.items():
        np.testing.assert_array_equal(theirs[k], v)
        np.testing.assert_array_equal(ours[k], v)


def test_copy_is_valid(art, tmp_path):
    """An artifact folder copied elsewhere still opens: the manifest holds relative paths."""
    copy = shutil.copytree(art, tmp_path / "copy")
    assert Artifact.open(copy).component("m").family == "Toy"
