"""An artifact's JSON files checked before any field is used: first against edgegen's declared
schemas (edgegen/core/schema/*.schema.json, JSON Schema 2020-12, the same documents a native or
browser runtime checks), then the cross-references a schema cannot state. Every failure is an
ArtifactError that names the file, the field and the way out.

jsonschema is imported on first use, so importing edgegen.core stays numpy-only.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import ArtifactError, require

SCHEMA_DIR = Path(__file__).with_name("schema")
REBUILD = "rebuild the artifact or copy it again from its source"
MAX_JSON_BYTES = 256 << 20
MAX_TENSOR_BYTES = 1 << 36
_MESSAGE_CHARS = 160


@functools.cache
def validator(name: str):
    """The validator of schema `name` (manifest, launch_plan, scheduler_config)."""
    jsonschema = require("jsonschema", "runtime")
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(_inline(schema, schema.get("$defs", {})))


def _inline(node, defs: dict):
    """The schema with each local `{"$ref": "#/$defs/x"}` replaced by its definition (none is
    recursive): the same rules, checked about twice as fast as jsonschema resolves references."""
    if isinstance(node, dict):
        if set(node) == {"$ref"} and node["$ref"].startswith("#/$defs/"):
            return _inline(defs[node["$ref"][len("#/$defs/"):]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def read_json(path: Path, where: str | None = None):
    """Parse a JSON file strictly: UTF-8, no NaN/Infinity, no key twice in one object, bounded size."""
    where = where or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ArtifactError(f"{where}: {size} bytes, more than the {MAX_JSON_BYTES} a JSON file of an "
                                f"artifact may have; {REBUILD}.")
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{where}: cannot be read ({exc.strerror}); {REBUILD}.") from exc
    return parse_json(data, where)


def parse_json(data: bytes, where: str):
    """The strict parse of read_json, on bytes already read (e.g. those a signature covers)."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:     # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ArtifactError(f"{where}: not valid JSON ({_short(str(exc))}); {REBUILD}.") from exc


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "…"


def check_schema(document, schema: str, where: str) -> None:
    """Raise ArtifactError naming the first field (in document order) that breaks schema `schema`."""
    errors = list(validator(schema).iter_errors(document))
    if not errors:
        return
    from jsonschema.exceptions import best_match

    error = best_match(errors)
    field = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    raise ArtifactError(f"{where}: field {field}: {_short(error.message)} (schema {schema}); {REBUILD}.")


def check_relpath(rel: str, where: str) -> None:
    """A path that stays inside the artifact folder (the schema says so too; this is the guard)."""
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or "\\" in rel or any(p in ("..", ".") for p in parts) or not parts:
        raise ArtifactError(f"{where}: path {rel!r} leaves the artifact folder; {REBUILD}.")


def _nbytes(spec: dict) -> int:
    return int(np.prod(spec["shape"], dtype=object)) * np.dtype(spec["dtype"]).itemsize


def _check_tensors(specs: list, where: str, kind: str) -> None:
    names = [s["name"] for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ArtifactError(f"{where}: {kind} {twice[:3]} are named twice; {REBUILD}.")
    for s in specs:
        if _nbytes(s) > MAX_TENSOR_BYTES:
            raise ArtifactError(f"{where}: {kind[:-1]} {s['name']!r} has shape {s['shape']}, over the "
                                f"{MAX_TENSOR_BYTES >> 30} GiB a tensor may have; {REBUILD}.")
        if "range" in s:
            lo, hi = s["range"]
            if not np.issubdtype(np.dtype(s["dtype"]), np.integer) or lo > hi:
                raise ArtifactError(f"{where}: {kind[:-1]} {s['name']!r}: range {s['range']} does not fit its "
                                    f"dtype {s['dtype']}; {REBUILD}.")


def check_manifest(manifest, where: str) -> None:
    """Schema first, then the cross-references: names unique, every file a component or the
    pipeline names listed with its checksum, paths inside the folder, tensor sizes bounded."""
    check_schema(manifest, "manifest", where)
    files = manifest["files"]
    for rel in files:
        check_relpath(rel, f"{where}: files")
    for name, comp in manifest["components"].items():
        at = f"{where}: component {name!r}"
        for kind in ("inputs", "outputs", "weights"):
            _check_tensors(comp.get(kind, []), at, kind)
        for role, rel in comp["files"].items():
            check_relpath(rel, f"{at}: files/{role}")
            if rel not in files:
                raise ArtifactError(f"{at}: files/{role} names {rel}, which the manifest's files section does "
                                    f"not list (no checksum); {REBUILD}.")
    pipeline = manifest["pipeline"]
    referenced = {"pipeline/scheduler_config": pipeline["scheduler_config"]} if "scheduler_config" in pipeline else {}
    for key in ("vocab", "merges"):
        if "tokenizer" in pipeline:
            referenced[f"pipeline/tokenizer/{key}"] = pipeline["tokenizer"][key]
    for field, rel in referenced.items():
        check_relpath(rel, f"{where}: {field}")
        if rel not in files:
            raise ArtifactError(f"{where}: {field} names {rel}, which the files section does not list; {REBUILD}.")
    if "memory_plan" in manifest:
        _check_memory_plan(manifest["memory_plan"], manifest["components"], f"{where}: memory_plan")
    if pipeline["kind"] == "class-conditional-dit":
        if pipeline["sample_shape"][0] != pipeline["batch"]:
            raise ArtifactError(f"{where}: pipeline/sample_shape {pipeline['sample_shape']} does not hold "
                                f"pipeline/batch {pipeline['batch']} samples; {REBUILD}.")
        high = [k for k in pipeline["id2label"] if int(k) >= pipeline["null_class"]]
        if high:
            raise ArtifactError(f"{where}: pipeline/id2label names class {high[0]}, not below the null class "
                                f"{pipeline['null_class']}; {REBUILD}.")


def _check_memory_plan(plan: dict, components: dict, where: str) -> None:
    """Every component a phase or a chunk list names is one the manifest has (or one cut into chunks
    it has), each chunk is named once, and the planned peak is the largest phase's."""
    planned = plan["components"]
    chunks = [c for entry in planned.values() for c in entry.get("chunks", [])]
    twice = sorted({c for c in chunks if chunks.count(c) > 1})
    if twice:
        raise ArtifactError(f"{where}: chunks {twice[:3]} are named twice; {REBUILD}.")
    for name, entry in planned.items():
        missing = [c for c in entry.get("chunks", []) if c not in components]
        if missing or (not entry.get("chunks") and name not in components):
            raise ArtifactError(f"{where}: component {name!r} names {missing[:3] or [name]}, which the manifest's "
                                f"components section does not hold; {REBUILD}.")
    for row in plan["phases"]:
        unknown = [c for c in row["components"] if c not in planned]
        if unknown:
            raise ArtifactError(f"{where}: phase {row['phase']!r} runs {unknown[:3]}, which the plan's components "
                                f"section does not hold; {REBUILD}.")
    if plan["peak_bytes"] != max(row["peak_bytes"] for row in plan["phases"]):
        raise ArtifactError(f"{where}: peak_bytes {plan['peak_bytes']} is not the largest phase's peak; {REBUILD}.")
