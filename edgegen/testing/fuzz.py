"""Artifact fuzzing: mutate a copy of a real artifact, then open, load and run it as an app would,
and sort the outcome. Every case must end as an edgegen error (one message), as accepted (a
harmless mutation), or, for a signed artifact, as refused by the signature check; never as a
traceback, a signal or a hang.

Cases that fail while the artifact is opened (manifest, schema, checksums, signature) are run in
this process; the rest load native libraries (TVM, OpenCL) and run in worker processes, several
cases per worker, so a crash is seen as a signal and costs one case.

Mutations that leave every file consistent with a manifest the attacker rewrote (a changed
instruction in the library, an enlarged launch grid) cannot be told from a real build without a
signature: they are fuzzed on signed artifacts only (kinds `signed.*`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgegen.core.launch_plan import FALLBACK_KERNELS

OUTCOMES = ("error", "accepted", "signature", "traceback", "signal", "hang")
_JUNK = [None, True, False, 0, -1, 1.5, 2 ** 40, -(2 ** 63), "", "x", "../../etc/passwd", "/etc/passwd",
         [], {}, [1, [2]], {"a": 1}, "\u202e\ufeff", "A" * 5000]
# plan fields a small numeric change may not touch on an unsigned artifact (see the module docstring)
_PLAN_GEOMETRY = ("grid", "block")


@dataclass
class Case:
    index: int
    artifact: str          # which source artifact (a key of the artifacts dict)
    kind: str
    detail: str = ""
    signed: bool = False
    outcome: str = ""
    message: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("index", "artifact", "kind", "detail", "signed", "outcome",
                                              "message", "seconds")}


# ---- editing helpers -------------------------------------------------------------------------

def _replace(path: Path, data: bytes) -> None:
    """Write `data` as a new file (the copy's unchanged files are hard links to the source)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _write_manifest(root: Path, m: dict) -> None:
    _replace(root / "manifest.json", json.dumps(m, indent=1).encode())


def _rehash(root: Path, rel: str) -> None:
    """Make the manifest's checksum of `rel` match its new contents (an attacker who can write the folder)."""
    m = _manifest(root)
    data = (root / rel).read_bytes()
    m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _write_manifest(root, m)


def _paths(node, prefix=()):
    """Every (path, value) in a JSON document, containers included."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def _json_mutation(rng: np.random.Generator, doc, op: str, skip=()) -> tuple[object, str]:
    """One structural edit of a JSON document that changes it: returns (new document, what was done)."""
    for _ in range(20):
        new, what = _json_edit(rng, doc, op, skip)
        if json.dumps(new, sort_keys=True) != json.dumps(doc, sort_keys=True):
            break
    return new, what


def _json_edit(rng: np.random.Generator, doc, op: str, skip=()) -> tuple[object, str]:
    doc = copy.deepcopy(doc)
    paths = [(p, v) for p, v in _paths(doc) if p and not any(s in p for s in skip)]
    if op == "number":
        paths = [(p, v) for p, v in paths if isinstance(v, (int, float)) and not isinstance(v, bool)] or paths
    elif op == "string":
        paths = [(p, v) for p, v in paths if isinstance(v, str)] or paths
    # one field name (list positions folded) first, then one place it occurs: a long list such as the
    # kernel table does not crowd out the other fields
    groups: dict[tuple, list] = {}
    for p, v in paths:
        groups.setdefault(tuple("#" if isinstance(k, int) else k for k in p), []).append((p, v))
    group = list(groups.values())[rng.integers(len(groups))]
    path, value = group[rng.integers(len(group))]
    parent = _get(doc, path[:-1])
    key = path[-1]
    where = "/".join(map(str, path))
    if op == "delete":
        del parent[key]
        return doc, f"deleted {where}"
    if op == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            new = [0, -1, value + 1, value - 1, value * 2, 2 ** 31, 2 ** 62, -(2 ** 31), 0.5, value + 0.5][
                rng.integers(10)]
        else:
            new = int(rng.integers(-5, 5))
        parent[key] = new
        return doc, f"{where}: {value!r:.40} -> {new!r}"
    if op == "string":
        new = ["", "../x", "/abs", "x" * 300, "ünï", value + "x" if isinstance(value, str) else "x",
               "NaN", "a/../../b"][rng.integers(8)]
        parent[key] = new
        return doc, f"{where}: -> {new!r:.40}"
    if op == "duplicate":
        if isinstance(value, list) and value:
            value.append(copy.deepcopy(value[rng.integers(len(value))]))
            return doc, f"{where}: an element twice"
        if isinstance(value, dict):
            value[f"extra{rng.integers(100)}"] = copy.deepcopy(_JUNK[rng.integers(len(_JUNK))])
            return doc, f"{where}: an extra key"
        parent[key] = [value, value]
        return doc, f"{where}: wrapped in a list"
    new = copy.deepcopy(_JUNK[rng.integers(len(_JUNK))])
    parent[key] = new
    return doc, f"{where}: -> {json.dumps(new)[:40]}"


def _byte_mutation(rng: np.random.Generator, data: bytes, op: str) -> tuple[bytes, str]:
    if not data:
        return b"x", "empty file -> one byte"
    if op == "truncate":
        n = int(rng.integers(0, len(data)))
        return data[:n], f"truncated to {n} of {len(data)} bytes"
    if op == "garbage":
        n = int(rng.integers(1, 4096))
        return rng.bytes(n), f"replaced by {n} random bytes"
    if op == "head":
        n = min(len(data), int(rng.integers(1, 64)))
        i = int(rng.integers(0, n))
        return data[:i] + bytes([data[i] ^ (1 << int(rng.integers(8)))]) + data[i + 1:], f"bit flip at byte {i}"
    i = int(rng.integers(0, len(data)))
    return data[:i] + bytes([data[i] ^ (1 << int(rng.integers(8)))]) + data[i + 1:], f"bit flip at byte {i}"


# ---- mutation kinds --------------------------------------------------------------------------

def _files_of(root: Path, role: str) -> list[str]:
    m = _manifest(root)
    return [c["files"][role] for c in m["components"].values() if role in c["files"]]


def _edit_json_file(rng, root: Path, rel: str, op: str, rehash: bool, skip=()) -> str:
    path = root / rel
    doc, what = _json_mutation(rng, json.loads(path.read_text()), op, skip)
    _replace(path, json.dumps(doc).encode())
    if rehash:
        _rehash(root, rel)
    return f"{rel}: {what}" + ("" if rehash else " (checksum left stale)")


def _manifest_json(op):
    def mutate(rng, root):
        m = _manifest(root)
        doc, what = _json_mutation(rng, m, op)
        _write_manifest(root, doc)
        return what
    return mutate


def _manifest_bytes(op):
    def mutate(rng, root):
        path = root / "manifest.json"
        data, what = _byte_mutation(rng, path.read_bytes(), op)
        _replace(path, data)
        return what
    return mutate


def _role_json(role, op, skip=()):
    def mutate(rng, root):
        files = _files_of(root, role) if role != "scheduler" else [_manifest(root)["pipeline"]["scheduler_config"]]
        rel = files[rng.integers(len(files))]
        return _edit_json_file(rng, root, rel, op, rehash=rng.random() < 0.8, skip=skip)
    return mutate


def _role_bytes(role, op, rehash=True):
    def mutate(rng, root):
        files = _files_of(root, role)
        rel = files[rng.integers(len(files))]
        data, what = _byte_mutation(rng, (root / rel).read_bytes(), op)
        _replace(root / rel, data)
        if rehash:
            _rehash(root, rel)
        return f"{rel}: {what}" + ("" if rehash else " (checksum left stale)")
    return mutate


def _tokenizer(key, op):
    def mutate(rng, root):
        rel = _manifest(root)["pipeline"]["tokenizer"][key]
        if key == "vocab" and op == "json":
            return _edit_json_file(rng, root, rel, ["delete", "replace", "number", "string"][rng.integers(4)],
                                   rehash=True)
        data, what = _byte_mutation(rng, (root / rel).read_bytes(), op) if op != "line" else _merges_line(rng, root / rel)
        _replace(root / rel, data)
        _rehash(root, rel)
        return f"{rel}: {what}"
    return mutate


def _merges_line(rng, path: Path) -> tuple[bytes, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = int(rng.integers(len(lines)))
    new = ["a b c", "", "zz qq", "\u00ff\u00fe x", "#version: 9", "onlyone"][rng.integers(6)]
    lines[i] = new
    return ("\n".join(lines) + "\n").encode(), f"line {i + 1} -> {new!r}"


def _weights_header(rng, root):
    rel = _files_of(root, "weights")[0]
    path = root / rel
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    doc, what = _json_mutation(rng, header, ["delete", "replace", "number", "duplicate"][rng.integers(4)],
                               skip=("__metadata__",))
    blob = json.dumps(doc, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    _replace(path, len(blob).to_bytes(8, "little") + blob + data[8 + n:])
    _rehash(root, rel)
    return f"{rel} header: {what}"


def _library_swap(rng, root):
    """The library replaced by another shared library of this machine (a valid ELF without edgegen's
    functions), checksum updated."""
    rel = _files_of(root, "library")[0]
    import ctypes.util

    candidates = [ctypes.util.find_library(n) for n in ("z", "m", "bz2", "ffi")]
    libs = [p for n in candidates if n for p in (Path("/lib/x86_64-linux-gnu") / n, Path("/usr/lib") / n)
            if p.is_file()]
    src = libs[rng.integers(len(libs))] if libs else Path(sys.executable)
    _replace(root / rel, src.read_bytes())
    _rehash(root, rel)
    return f"{rel}: replaced by {src.name}"


def _kernels_edit(role: str):
    return lambda rng, root: _edit_kernels(rng, root, role)


def _edit_kernels(rng, root, role: str):
    rel = _files_of(root, role)[0]
    lines = (root / rel).read_text().splitlines()
    op = int(rng.integers(4))
    i = int(rng.integers(len(lines)))
    if op == 0:
        what = f"line {i + 1} deleted"
        del lines[i]
    elif op == 1:
        what = f"garbage after line {i + 1}"
        lines.insert(i + 1, "@@ not C @@ {")
    elif op == 2:
        import re

        names = re.findall(r"__kernel void (\w+)\(", "\n".join(lines)) or ["x"]
        name = names[rng.integers(len(names))]
        what = f"kernel {name} renamed"
        lines = [ln.replace(f"void {name}(", f"void {name}_renamed(") for ln in lines]
    else:
        what = f"program marker at line {i + 1} renamed"
        marks = [j for j, ln in enumerate(lines) if ln.startswith("// edgegen-program: ")]
        j = marks[rng.integers(len(marks))]
        lines[j] += "_gone"
    _replace(root / rel, ("\n".join(lines) + "\n").encode())
    _rehash(root, rel)
    return f"{rel}: {what}"


def _remove_file(rng, root):
    files = sorted(_manifest(root)["files"])
    rel = files[rng.integers(len(files))]
    (root / rel).unlink()
    return f"{rel} removed"


def _add_file(rng, root):
    rel = ["extra.bin", "transformer/evil.so", "scheduler/more.json"][rng.integers(3)]
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    _replace(root / rel, rng.bytes(64))
    return f"{rel} added"


def _file_to_dir(rng, root):
    files = sorted(_manifest(root)["files"])
    rel = files[rng.integers(len(files))]
    (root / rel).unlink()
    (root / rel).mkdir()
    return f"{rel} replaced by a folder"


def _manifest_symlink(rng, root):
    files = sorted(_manifest(root)["files"])
    rel = files[rng.integers(len(files))]
    outside = root.parent / f"{root.name}.outside"
    outside.write_bytes((root / rel).read_bytes())
    (root / rel).unlink()
    (root / rel).symlink_to(outside)
    return f"{rel} made a link to a file outside the folder"


# kind -> (mutation, which artifacts it applies to: a predicate on the manifest)
def _has(role):
    return lambda m: any(role in c["files"] for c in m["components"].values())


def _always(m):
    return True


def _sd(m):
    return "tokenizer" in m["pipeline"]


KINDS = {
    "manifest.delete": (_manifest_json("delete"), _always),
    "manifest.replace": (_manifest_json("replace"), _always),
    "manifest.number": (_manifest_json("number"), _always),
    "manifest.string": (_manifest_json("string"), _always),
    "manifest.duplicate": (_manifest_json("duplicate"), _always),
    "manifest.bitflip": (_manifest_bytes("flip"), _always),
    "manifest.truncate": (_manifest_bytes("truncate"), _always),
    "plan.delete": (_role_json("plan", "delete"), _has("plan")),
    "plan.replace": (_role_json("plan", "replace"), _has("plan")),
    "plan.number": (_role_json("plan", "number", skip=_PLAN_GEOMETRY), _has("plan")),
    "plan.string": (_role_json("plan", "string"), _has("plan")),
    "plan.duplicate": (_role_json("plan", "duplicate", skip=_PLAN_GEOMETRY), _has("plan")),
    "kernels.edit": (_kernels_edit("kernels"), _has("kernels")),
    "kernels.bitflip": (_role_bytes("kernels", "flip", rehash=False), _has("kernels")),
    # what a device without float16 arithmetic (PoCL) runs in place of `kernels`
    "kernels_fp32.edit": (_kernels_edit(FALLBACK_KERNELS), _has(FALLBACK_KERNELS)),
    "kernels_fp32.bitflip": (_role_bytes(FALLBACK_KERNELS, "flip", rehash=False), _has(FALLBACK_KERNELS)),
    "scheduler.delete": (_role_json("scheduler", "delete"), _always),
    "scheduler.replace": (_role_json("scheduler", "replace"), _always),
    "scheduler.number": (_role_json("scheduler", "number"), _always),
    "scheduler.string": (_role_json("scheduler", "string"), _always),
    "tokenizer.vocab": (_tokenizer("vocab", "json"), _sd),
    "tokenizer.vocab_bytes": (_tokenizer("vocab", "truncate"), _sd),
    "tokenizer.merges": (_tokenizer("merges", "line"), _sd),
    "tokenizer.merges_bytes": (_tokenizer("merges", "garbage"), _sd),
    "weights.header": (_weights_header, _has("weights")),
    "weights.data": (_role_bytes("weights", "flip"), _has("weights")),
    "weights.truncate": (_role_bytes("weights", "truncate"), _has("weights")),
    "weights.stale": (_role_bytes("weights", "flip", rehash=False), _has("weights")),
    "library.stale": (_role_bytes("library", "flip", rehash=False), _has("library")),
    "library.truncate": (_role_bytes("library", "truncate"), _has("library")),
    "library.garbage": (_role_bytes("library", "garbage"), _has("library")),
    "library.header": (_role_bytes("library", "head"), _has("library")),
    "library.swap": (_library_swap, _has("library")),
    "files.remove": (_remove_file, _always),
    "files.add": (_add_file, _always),
    "files.folder": (_file_to_dir, _always),
    "files.symlink": (_manifest_symlink, _always),
}
# on a signed artifact anything goes, including the edits no unsigned check can catch
SIGNED_KINDS = {
    "signed.library_code": (_role_bytes("library", "flip"), _has("library")),
    "signed.plan_grid": (_role_json("plan", "number"), _has("plan")),
    "signed.manifest": (_manifest_json("replace"), _always),
    "signed.weights": (_role_bytes("weights", "flip"), _has("weights")),
    "signed.add_file": (_add_file, _always),
    "signed.remove_signature": (lambda rng, root: ((root / "manifest.sig").unlink(), "manifest.sig removed")[1],
                                _always),
    "signed.signature_bytes": (lambda rng, root: _sig_flip(rng, root), _always),
}


def _sig_flip(rng, root):
    path = root / "manifest.sig"
    data, what = _byte_mutation(rng, path.read_bytes(), "flip")
    _replace(path, data)
    return f"manifest.sig: {what}"


# ---- planning and running --------------------------------------------------------------------

# the kinds that only some artifacts have files for; the others apply to every artifact
SPECIFIC = ("plan.", "kernels.", "library.", "tokenizer.")


def plan_cases(artifacts: dict[str, Path], n: int, seed: int, signed_share: float = 0.12,
               general_share: dict[str, float] | None = None) -> list[Case]:
    """`n` cases over the kinds that apply to each artifact (fixed by `seed`). Every (artifact, kind)
    is equally likely, except that general kinds (manifest, scheduler, weights, files) on artifact A
    weigh `general_share[A]` (default 1): an artifact that is slow to load can be kept to the kinds
    only it has."""
    rng = np.random.default_rng(seed)
    share = general_share or {}
    slots, weights = [], []
    for name, root in artifacts.items():
        m = _manifest(Path(root))
        for table, is_signed in ((KINDS, False), (SIGNED_KINDS, True)):
            for kind, (_, applies) in table.items():
                if applies(m):
                    slots.append((name, kind, is_signed))
                    weights.append(1.0 if kind.startswith(SPECIFIC) else share.get(name, 1.0))
    weights = np.asarray(weights)
    signed = np.array([s[2] for s in slots])
    cases = []
    for i in range(n):
        pick = signed if rng.random() < signed_share else ~signed
        p = np.where(pick, weights, 0.0)
        name, kind, is_signed = slots[rng.choice(len(slots), p=p / p.sum())]
        cases.append(Case(i, name, kind, signed=is_signed))
    return cases


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.with_name(f"{root.name}.outside").unlink(missing_ok=True)


def make_copy(case: Case, source: Path, work: Path, seed: int, keyfile: Path | None) -> Path:
    """A mutated copy of `source` for `case` (unchanged files are hard links)."""
    root = work / f"case{case.index:05d}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(source, root, copy_function=_link_or_copy)
    if case.signed:
        from edgegen.core.signing import sign

        (root / "manifest.sig").unlink(missing_ok=True)
        sign(root, keyfile)
    rng = np.random.default_rng([seed, case.index])
    mutate = (SIGNED_KINDS if case.signed else KINDS)[case.kind][0]
    case.detail = mutate(rng, root)
    return root


def _classify(case: Case, exc: BaseException | None) -> None:
    from edgegen.core.errors import EdgegenError

    if exc is None:
        case.outcome = "accepted"
    elif isinstance(exc, EdgegenError):
        text = str(exc)
        case.message = text
        # the signature, then the signed checksums and sizes of every file
        signature = case.signed and any(mark in text for mark in ("signature", "signed", "SHA-256", "manifest.sig",
                                                                  "the manifest says"))
        case.outcome = "signature" if signature else "error"
    else:
        case.outcome = "traceback"
        case.message = "".join(traceback.format_exception(exc))[-2000:]


def open_case(root: Path, trusted_keys) -> None:
    """What needs no native library: the manifest (schema, signature, checksums), the pipeline's
    components, scheduler config, tokenizer files and launch plans."""
    from edgegen.runtimes.checks import prepare

    prepare(root, trusted_keys=trusted_keys)


def run_case(root: Path, trusted_keys) -> None:
    """Load and run as an app would: a short generation through the public API."""
    from edgegen import runtimes

    pipe = runtimes.load(root, trusted_keys=trusted_keys)
    try:
        if pipe.artifact.pipeline["kind"] == "stable-diffusion":
            pipe("a red fox", num_inference_steps=2, guidance_scale=7.5, seed=0, output_type="np")
        else:
            pipe([1], num_inference_steps=2, guidance_scale=1.5, seed=0, output_type="np")
    finally:
        pipe.close()


def _worker(batch_file: str) -> None:
    """Worker process: run each case of the batch and print one JSON line per finished case."""
    batch = json.loads(Path(batch_file).read_text())
    for item in batch["cases"]:
        case = Case(**{k: item[k] for k in ("index", "artifact", "kind", "detail", "signed")})
        t0 = time.perf_counter()
        print(json.dumps({"start": case.index}), flush=True)
        try:
            run_case(Path(item["root"]), batch["trusted_keys"] if case.signed else None)
            exc = None
        except BaseException as e:  # noqa: BLE001 - sorting every outcome is the point
            exc = e
        _classify(case, exc)
        case.seconds = time.perf_counter() - t0
        print(json.dumps(case.to_json()), flush=True)


def run_in_workers(items: list[tuple[Case, Path]], trusted_keys: list, batch_size: int, timeout_s: float,
                   work: Path) -> None:
    """Run cases in worker processes, `batch_size` per process; a worker that dies by a signal or
    passes `timeout_s` on one case marks that case and the rest of its batch starts anew."""
    pending = list(items)
    while pending:
        batch, pending = pending[:batch_size], pending[batch_size:]
        by_index = {c.index: (c, r) for c, r in batch}
        spec = {"trusted_keys": [str(k) for k in trusted_keys],
                "cases": [{**c.to_json(), "root": str(r)} for c, r in batch]}
        batch_file = work / f"batch{batch[0][0].index}.json"
        batch_file.write_text(json.dumps(spec))
        err_file = batch_file.with_suffix(".err")
        with open(err_file, "w") as err:
            proc = subprocess.Popen([sys.executable, "-c", f"from edgegen.testing.fuzz import _worker; "
                                     f"_worker({str(batch_file)!r})"], stdout=subprocess.PIPE, stderr=err,
                                    text=True, start_new_session=True)
        done, current, deadline = set(), None, time.monotonic() + timeout_s
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        hung = False
        while True:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                hung = True
                break
            line = proc.stdout.readline()
            if not line:
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "start" in record:
                current, deadline = record["start"], time.monotonic() + timeout_s
                continue
            case = by_index[record["index"]][0]
            case.outcome, case.message, case.seconds = record["outcome"], record["message"], record["seconds"]
            done.add(case.index)
        if hung:
            os.killpg(proc.pid, 9)
        proc.wait()
        proc.stdout.close()
        stderr = err_file.read_text(errors="replace")
        if current is not None and current not in done:
            case = by_index[current][0]
            case.outcome = "hang" if hung else "signal"
            case.message = (f"no result within {timeout_s:.0f}s" if hung else
                            f"worker ended with status {proc.returncode}: {stderr[-1500:]}")
            done.add(current)
        pending = [(c, r) for c, r in batch if c.index not in done] + pending


def fuzz(artifacts: dict[str, Path], n: int, seed: int, work: Path, keyfile: Path, batch_size: int = 12,
         timeout_s: float = 120.0, progress=None, general_share: dict[str, float] | None = None) -> list[Case]:
    """Plan `n` cases, mutate, open in-process, run the survivors in workers; returns the cases."""
    work.mkdir(parents=True, exist_ok=True)
    trusted = [Path(str(keyfile) + ".pub")]
    cases = plan_cases(artifacts, n, seed, general_share=general_share)
    survivors = []
    for case in cases:
        t0 = time.perf_counter()
        try:
            root = make_copy(case, Path(artifacts[case.artifact]), work, seed, keyfile)
        except Exception:  # noqa: BLE001 - a mutation that cannot apply is a bug of the fuzzer
            raise RuntimeError(f"case {case.index} ({case.kind}) could not be made") from None
        try:
            open_case(root, trusted if case.signed else None)
        except BaseException as exc:  # noqa: BLE001
            _classify(case, exc)
            case.seconds = time.perf_counter() - t0
            _remove(root)
        else:
            survivors.append((case, root))
        if progress:
            progress(case)
    run_in_workers(survivors, trusted, batch_size, timeout_s, work)
    for _, root in survivors:
        _remove(root)
    return cases


def tally(cases: list[Case]) -> dict:
    """Outcomes by mutation kind, and overall."""
    kinds: dict[str, dict[str, int]] = {}
    for c in cases:
        row = kinds.setdefault(c.kind, {o: 0 for o in OUTCOMES})
        row[c.outcome] += 1
    total = {o: sum(r[o] for r in kinds.values()) for o in OUTCOMES}
    return {"cases": len(cases), "total": total, "by_kind": dict(sorted(kinds.items()))}
