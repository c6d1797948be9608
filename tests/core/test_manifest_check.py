"""The declared schema and the cross-references, on the toy artifact of test_artifact.py."""

import json
import re

import pytest

from edgegen.core import Artifact, ArtifactError
from edgegen.core.manifest_check import SCHEMA_DIR

from test_artifact import _write


@pytest.fixture
def art(tmp_path):
    return _write(tmp_path / "art")


def _edit(art, change):
    path = art / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def _weight(m):
    return m["components"]["m"]["weights"][0]


@pytest.mark.parametrize("change,field", [
    (lambda m: _weight(m).pop("dtype"), "components/m/weights/0"),
    (lambda m: _weight(m).pop("shape"), "components/m/weights/0"),
    (lambda m: _weight(m).update(shape=[3, [4]]), "components/m/weights/0/shape/1"),
    (lambda m: _weight(m).update(shape=[3, 0]), "components/m/weights/0/shape/1"),
    (lambda m: _weight(m).update(dtype="complex64"), "components/m/weights/0/dtype"),
    (lambda m: m["components"]["m"]["weights"].__setitem__(0, "w"), "components/m/weights/0"),
    (lambda m: m["components"]["m"]["weights"].__setitem__(0, True), "components/m/weights/0"),
    (lambda m: m["components"]["m"]["files"].update(library="../m/model.bin"), "components/m/files/library"),
    (lambda m: m["components"]["m"]["files"].update(library="/etc/passwd"), "components/m/files/library"),
    (lambda m: m["files"]["m/model.bin"].update(bytes="200"), "files/m/model.bin/bytes"),
    (lambda m: m.pop("components"), "(top level)"),
])
def test_schema_names_the_field(art, change, field):
    _edit(art, change)
    with pytest.raises(ArtifactError, match=rf"manifest.json: field {re.escape(field)}: .*rebuild the artifact") as err:
        Artifact.open(art)
    assert "\n" not in str(err.value)


def test_unlisted_file(art):
    _edit(art, lambda m: m["files"].pop("m/model.bin"))
    with pytest.raises(ArtifactError, match="names m/model.bin, which the manifest's files section does not list"):
        Artifact.open(art)


def test_duplicate_key(art):
    path = art / "manifest.json"
    text = path.read_text()
    path.write_text(text.replace('"format":', '"components": {}, "format":', 1))
    with pytest.raises(ArtifactError, match="key 'components' appears twice"):
        Artifact.open(art)


def test_duplicate_tensor_name(art):
    _edit(art, lambda m: m["components"]["m"]["weights"].append(_weight(m)))
    with pytest.raises(ArtifactError, match=r"weights \['w'\] are named twice"):
        Artifact.open(art)


def test_nan_is_not_json(art):
    _edit(art, lambda m: m["pipeline"].update(scale="NAN"))
    path = art / "manifest.json"
    path.write_text(path.read_text().replace('"NAN"', "NaN"))
    with pytest.raises(ArtifactError, match="not valid JSON.*NaN is not a JSON number"):
        Artifact.open(art)


def test_symlinked_file_refused(art, tmp_path):
    outside = tmp_path / "outside.bin"
    target = art / "m" / "model.bin"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(ArtifactError, match="is a link or lies outside the artifact folder"):
        Artifact.open(art)


def test_schemas_are_packaged():
    names = sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json"))
    assert names == ["launch_plan.schema.json", "manifest.schema.json", "scheduler_config.schema.json"]
