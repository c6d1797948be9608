"""The runtime's CLIP tokenizer against transformers' on the offline vocabulary."""

import pytest

from edgegen.runtimes.tokenizer import CLIPTokenizer
from edgegen.testing.tiny import BOS, EOS, make_clip_tokenizer_files

PROMPTS = [
    "", "a photo of an astronaut riding a horse", "A PAINTING   of a Red fox,\tin the snow!!",
    "it's the city's lights at night — naïve café 42", "emoji 🚀 and ünïcödé",
    " ".join(["astronaut"] * 100),  # longer than 77 tokens: truncated with EOS kept
]


@pytest.mark.torch
@pytest.mark.parametrize("fast", [False, True])
def test_matches_transformers(tmp_path, fast):
    import transformers

    make_clip_tokenizer_files(tmp_path)
    cls = transformers.CLIPTokenizerFast if fast else transformers.CLIPTokenizer
    ref = cls(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), bos_token=BOS, eos_token=EOS,
              pad_token=EOS, unk_token=EOS, model_max_length=77)
    ours = CLIPTokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt", max_length=77, bos_token=BOS,
                         eos_token=EOS, pad_token=EOS, unk_token=EOS)
    expected = ref(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids
    got = ours(PROMPTS)
    assert got.dtype.name == "int32" and got.shape == (len(PROMPTS), 77)
    assert (got == expected).all()
