"""The CLIP BPE tokenizer, run by the `tokenizers` library from vocab.json and merges.txt.

It reproduces transformers' CLIPTokenizer(Fast) with padding="max_length" and
truncation, as Stable Diffusion pipelines call it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgegen.core.errors import ArtifactError, MissingDependencyError


class CLIPTokenizer:
    def __init__(self, vocab_file: str | Path, merges_file: str | Path, *, max_length: int,
                 bos_token: str, eos_token: str, pad_token: str, unk_token: str):
        try:
            from tokenizers import Tokenizer, decoders
            from tokenizers.models import BPE
        except ImportError as exc:
            raise MissingDependencyError(
                "the `tokenizers` library is needed to tokenize prompts; `pip install 'edgegen[runtime]'`."
            ) from exc
        vocab, merges = read_vocab(Path(vocab_file)), read_merges(Path(merges_file))
        for token in (bos_token, eos_token, pad_token, unk_token):
            if token not in vocab:
                raise ArtifactError(f"{vocab_file}: special token {token!r} is not in the vocabulary; "
                                    f"rebuild the artifact.")
        try:
            tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                end_of_word_suffix="</w>", fuse_unk=False, unk_token=unk_token))
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exceptions
            raise ArtifactError(f"{merges_file}: the tokenizer cannot be built from it and {Path(vocab_file).name} "
                                f"({exc}); rebuild the artifact.") from exc
        clip_text_steps(tok)
        tok.decoder = decoders.ByteLevel()
        self._tok = tok
        self.max_length = int(max_length)
        self.bos_id = vocab[bos_token]
        self.eos_id = vocab[eos_token]
        self.pad_id = vocab[pad_token]

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Token ids of shape [len(texts), max_length], int32, with BOS/EOS and padding."""
        out = np.full((len(texts), self.max_length), self.pad_id, dtype=np.int32)
        for row, text in enumerate(texts):
            body = self._tok.encode(text, add_special_tokens=False).ids[: self.max_length - 2]
            ids = [self.bos_id, *body, self.eos_id]
            out[row, : len(ids)] = ids
        return out


def clip_text_steps(tok) -> None:
    """Give a `tokenizers` Tokenizer CLIP's normaliser (NFC, whitespace runs to one space, lowercase) and
    pre-tokeniser (CLIP's split pattern, then byte-level)."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.json: token -> id, ids distinct non-negative integers."""
    from edgegen.core.manifest_check import read_json

    vocab = read_json(path)
    if not isinstance(vocab, dict) or not all(type(v) is int and v >= 0 for v in vocab.values()):
        raise ArtifactError(f"{path}: not a vocabulary (an object of token -> non-negative integer id); "
                            f"rebuild the artifact.")
    if len(set(vocab.values())) != len(vocab):
        raise ArtifactError(f"{path}: two tokens share one id; rebuild the artifact.")
    return vocab


def read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt: one pair of tokens per line after an optional `#version` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot be read as UTF-8 text ({exc}); rebuild the artifact.") from exc
    merges = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#version") or not line.strip():
            continue
        pair = line.split()
        if len(pair) != 2:
            raise ArtifactError(f"{path}: line {number} is not a pair of tokens; rebuild the artifact.")
        merges.append((pair[0], pair[1]))
    return merges
