"""The CLIP BPE tokenizer, run by the `tokenizers` library from vocab.json and merges.txt.

It reproduces transformers' CLIPTokenizer(Fast) with padding="max_length" and
truncation, as Stable Diffusion pipelines call it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgegen.core.errors import MissingDependencyError


class CLIPTokenizer:
    def __init__(self, vocab_file: str | Path, merges_file: str | Path, *, max_length: int,
                 bos_token: str, eos_token: str, pad_token: str, unk_token: str):
        try:
            from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
            from tokenizers.models import BPE
        except ImportError as exc:
            raise MissingDependencyError(
                "the `tokenizers` library is needed to tokenize prompts; `pip install 'edgegen[runtime]'`."
            ) from exc
        vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        merges = []
        for line in Path(merges_file).read_text(encoding="utf-8").splitlines():
            if line.startswith("#version") or not line.strip():
                continue
            a, b = line.split()
            merges.append((a, b))
        tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="</w>", fuse_unk=False, unk_token=unk_token))
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                                 behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ])
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
