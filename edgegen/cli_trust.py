"""The signing side of the `edgegen` command: `keygen`, `sign`, `build --sign` and
`--trusted-key` on the commands that open an artifact."""

from __future__ import annotations

import time


def add_parsers(sub) -> None:
    k = sub.add_parser("keygen", help="make an Ed25519 key pair for signing artifacts (KEYFILE and KEYFILE.pub)")
    k.add_argument("keyfile")
    k.set_defaults(func=cmd_keygen)
    s = sub.add_parser("sign", help="sign an artifact (an Ed25519 signature over its manifest, which holds every "
                                    "file's SHA-256)")
    s.add_argument("artifact")
    s.add_argument("--key", required=True, help="private key file from `edgegen keygen`")
    s.set_defaults(func=cmd_sign)


def add_trusted_key(parser) -> None:
    parser.add_argument("--trusted-key", action="append", metavar="PUB", dest="trusted_keys",
                        help="accept only an artifact signed by this public key (.pub from `edgegen keygen`; "
                             "repeat for several)")


def check_trusted(args) -> None:
    """For commands that hand the path on (validate, bench): refuse it here unless it is signed by a
    trusted key and intact."""
    if getattr(args, "trusted_keys", None):
        from edgegen.core import Artifact

        Artifact.open(args.artifact, trusted_keys=args.trusted_keys)


def cmd_keygen(args) -> int:
    from edgegen.core.signing import keygen

    private, public = keygen(args.keyfile)
    print(f"wrote {private} (private: keep it secret) and {public} (pass it to --trusted-key)")
    return 0


def cmd_sign(args) -> int:
    from edgegen.core.signing import sign

    t0 = time.perf_counter()
    path = sign(args.artifact, args.key)
    print(f"signed {args.artifact}: {path} ({time.perf_counter() - t0:.2f}s)")
    return 0
