"""`edgegen web`: a static site that runs a webgpu artifact in the browser (runtimes/web/).

The site is index.html and the ES modules of runtimes/web, edgegen's declared schemas (the page checks the
manifest and launch plans by the same documents as every runtime) in schema/, and the artifact's files in
artifact/. Any static file server serves it; `serve` is Python's, with the MIME types a module script needs.
"""

from __future__ import annotations

import functools
import http.server
import shutil
from pathlib import Path

from edgegen.core.artifact import MANIFEST, Artifact
from edgegen.core.errors import ArtifactError
from edgegen.core.manifest_check import SCHEMA_DIR

WEB_DIR = Path(__file__).resolve().parents[1] / "runtimes" / "web"
# what the browser runtime runs today (runtimes/web/edgegen.js: PIPELINES)
PIPELINES = ("class-conditional-dit", "stable-diffusion")
SITE_FILES = ("index.html", "demo.js", "edgegen.js", "checks.js", "numerics.js", "tokenizer.js")
MIME = {".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".html": "text/html",
        ".wgsl": "text/plain; charset=utf-8", ".safetensors": "application/octet-stream"}


def web_dir() -> Path:
    """runtimes/web of this install (a checkout, or the package data of an installed edgegen)."""
    from edgegen import runtimes

    for path in (Path(runtimes.__file__).resolve().parent / "web", WEB_DIR):
        if all((path / f).is_file() for f in SITE_FILES):
            return path
    raise ArtifactError(f"the browser runtime (runtimes/web: {', '.join(SITE_FILES)}) is not in this install; "
                        f"reinstall edgegen from its source tree.")


def check_browser_artifact(artifact: Artifact) -> None:
    """Refuse, before anything is written, an artifact the page cannot run."""
    kind = artifact.pipeline.get("kind")
    if kind not in PIPELINES:
        raise ArtifactError(f"{artifact.root}: pipeline kind {kind!r} has no browser pipeline yet (the page runs "
                            f"{list(PIPELINES)}); run it with `edgegen run` instead.")
    for name, comp in artifact.components.items():
        if comp.backend != "webgpu":
            raise ArtifactError(f"{artifact.root}: component {name!r} is built for backend {comp.backend!r}; "
                                f"the browser runs WebGPU kernels: rebuild with `edgegen build MODEL --target webgpu`.")


def write_site(artifact_dir: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the static site for the artifact at `artifact_dir` into `out`; returns `out`."""
    artifact = Artifact.open(artifact_dir)          # manifest checked, every file's checksum verified
    check_browser_artifact(artifact)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite and not (out / "index.html").is_file():
            raise ArtifactError(f"{out} exists and is not an edgegen site; pass an empty or new folder.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    source = web_dir()
    for name in SITE_FILES:
        shutil.copy2(source / name, out / name)
    (out / "schema").mkdir()
    for schema in sorted(SCHEMA_DIR.glob("*.schema.json")):
        shutil.copy2(schema, out / "schema" / schema.name)
    site_artifact = out / "artifact"
    for rel in [MANIFEST, *artifact.manifest["files"]]:
        dest = site_artifact / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact.file(rel) if rel != MANIFEST else artifact.root / MANIFEST, dest)
    return out


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME}

    def log_message(self, format, *args):      # noqa: A002 - the stdlib's signature
        pass


def make_server(site: str | Path, port: int = 8000, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """An HTTP server for the site on host:port (port 0: a free one; the server's `server_port` says which).
    localhost is a secure context, so the page gets WebGPU, the Cache API and crypto.subtle."""
    handler = functools.partial(_Handler, directory=str(site))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise ArtifactError(f"cannot serve on {host}:{port} ({exc.strerror}); pass another --port.") from exc


def command(args) -> int:
    """`edgegen web ART (--out DIR | --serve [--port N])`: write the site, and serve it if asked."""
    import tempfile

    from edgegen.console import line

    if args.out is None and not args.serve:
        raise ArtifactError("edgegen web: pass --out DIR to write the site, --serve to serve it, or both.")
    site = write_site(args.artifact, args.out or tempfile.mkdtemp(prefix="edgegen-web-"), overwrite=args.overwrite)
    if not args.serve:
        print(line("web_site", folder=site))
        return 0
    server = make_server(site, args.port, args.host)
    print(line("web_serving", folder=site, url=f"http://{args.host}:{server.server_port}/"), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_parser(sub) -> None:
    w = sub.add_parser("web", help="a static site that runs a webgpu artifact in the browser (WebGPU)")
    w.add_argument("artifact", help="an artifact built with --target webgpu")
    w.add_argument("--out", help="write the site (index.html, the runtime modules, the artifact) here")
    w.add_argument("--serve", action="store_true", help="serve the site on localhost until interrupted")
    w.add_argument("--port", type=int, default=8000, help="the port to serve on (0: a free one)")
    w.add_argument("--host", default="127.0.0.1", help="the address to serve on (WebGPU needs localhost or https)")
    w.add_argument("--overwrite", action="store_true", help="replace the folder --out names")
    w.set_defaults(func=command)
