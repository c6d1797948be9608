"""The C CLIP tokenizer (runtimes/native/src/tokenizer.c) against runtimes/tokenizer.py (the tokenizers library)."""

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edgegen.core.errors import ArtifactError
from edgegen.runtimes.tokenizer import CLIPTokenizer, clip_text_steps
from edgegen.testing.tiny import BOS, EOS, make_clip_tokenizer_files

NATIVE = Path(__file__).resolve().parents[3] / "runtimes" / "native"

PROMPTS = [
    "a photo of an astronaut riding a horse on the moon",
    "A Painting of a RED fox in the snow, trending on artstation!!!",
    "", " ", "   \t\n  ", "\u3000\u2028\x85 \xa0",
    "it's what they're doing; we've, I'm, you'll, he'd, don't 'S 'RE '' 'x",
    "hello...world!!! ??? --- (((nested))) $100 #1 @user 50% a+b=c",
    "café naïve résumé Ångström crème brûlée",
    "cafe\u0301 nai\u0308ve A\u030a e\u0323\u0302 \u1100\u1161\u11a8 q\u0307\u0323",
    "İstanbul IŞIK ıi straße STRASSE ẞ ΣΟΦΟΣ σοφός",
    "東京の夜景 北京 서울의 밤 ひらがな カタカナ",
    "🦊 in the ❄️ snow 👩‍🚀🚀 ✨✨ 🇫🇷",
    "full-width ０１２３４５ ＡＢＣ ａｂｃ Ⅻ ½ ² ٣٤٥ ४२",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "numbers 1234567890 and 3.14159 and 1,000,000",
    "Ελληνικά кириллица עברית العربية हिन्दी ไทย",
    " ".join(["word"] * 100),
    "a" * 300,
    "x" + "\u0301" * 40,
    "\x00\x01\x7f control \u200b\u200d\ufeff zero width",
]


def _record(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<I", len(data)) + data


@pytest.fixture(scope="module")
def program(native_program):
    return native_program("test_text_tokenizer")


def run_c(program, folder, prompts, max_length=77, specials=(BOS, EOS, EOS, EOS)):
    proc = subprocess.run([str(program), str(folder / "vocab.json"), str(folder / "merges.txt"), str(max_length),
                           *specials], input=b"".join(_record(p) for p in prompts), capture_output=True)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    if proc.returncode:
        return proc.stderr.decode()
    return [[int(v) for v in line.split()] for line in proc.stdout.decode().splitlines()]


def python_ids(folder, prompts, max_length=77, unk=EOS):
    tok = CLIPTokenizer(folder / "vocab.json", folder / "merges.txt", max_length=max_length,
                        bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=unk)
    return tok(prompts).tolist()


CORPUS = """a photo of an astronaut riding a horse on the moon. a painting of a red fox in the snow,
a cat sitting on a table; the city at night with lights and rain! portrait of a woman, highly detailed,
digital art, trending on artstation, 4k, 8k, unreal engine, octane render, concept art, sharp focus.
it's a dog's life, they're here, we've been, I'm happy, you'll see, he'd go, don't stop.
café crème brûlée naïve résumé à la carte Ångström smörgåsbord fjörður piñata jalapeño façade.
straße größe İstanbul ıspanak şehir çiçek ğ Σοφία ελληνικά кошка собака москва зима.
東京の夜景 京都の寺 富士山と桜 北京 上海 서울의 밤 한국어 ひらがな カタカナ 漢字.
🦊 ❄️ 🚀 ✨ 🌙 ⭐ emoji art, ０１２３ full width, ½ ¾ ² ³, €100 £50 ¥300 $20 100% #hashtag @name.
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A vocabulary trained here with the same normaliser and pre-tokeniser: a few thousand real merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("trained")
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS))
    clip_text_steps(tok)
    rng = random.Random(0)
    syllables = ("ka ri to na mo se lu pe di ga ve zo str th ch sh qu ph ck ng ré è ça ñu ö ü ß ış ğa "
                 "λο σα κυ мо ра зи ши の か ル 서 울 한 東 京 🦊 ❄️ 1 42 '").split()
    words = CORPUS.split() + ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(4000)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    lines = [" ".join(rng.choices(words, weights, k=12)) for _ in range(6000)] + CORPUS.splitlines()
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=1, special_tokens=[BOS, EOS], end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.model.save(str(folder))
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) > 1500
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    vocab = make_clip_tokenizer_files(folder)
    assert len(vocab) == 577  # the tiny SD pipeline's: 512 byte characters, 63 merges (all its corpus has), BOS, EOS
    return folder


def _random_prompts(n: int) -> list[str]:
    pool = (list("abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;:!?'\"-_()[]{}/\\@#$%^&*+=~`|<>")
            + list("éèêëàâäîïôöùûüçñÅåøæœßẞİıŞşĞğΣσςΩω")
            + ["'s", "'re", "'ll", "'d", "'m", "'t", "'ve", "'S", "'RE"]
            + list("\u0300\u0301\u0302\u0308\u030a\u0323\u0327\u0307\u031b\u0345")
            + list("\u1100\u1161\u11a8\uac00\ud55c東京の夜景서울ひカ")
            + ["🦊", "❄️", "👩‍🚀", "🇫🇷", "\u200d", "\ufe0f"]
            + list("０１２ＡＢａｂ½²٣४Ⅻ")
            + list(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2009\u2028\u2029\u202f\u205f\u3000\x1c\x1f")
            + ["astronaut", "horse", "riding", "painting", "photo", "the ", "snow", "café", "crème"])
    rng = random.Random(16)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(n)]


# The trained vocabulary lacks many "<byte></w>" tokens: with BOS as the unknown token, its ids show.
@pytest.mark.parametrize("vocab,unk", [("tiny", EOS), ("trained", EOS), ("trained", BOS)])
@pytest.mark.parametrize("max_length", [77, 8])
def test_same_ids_as_python(program, request, vocab, unk, max_length):
    folder = request.getfixturevalue(vocab)
    prompts = PROMPTS + _random_prompts(400)
    got = run_c(program, folder, prompts, max_length, specials=(BOS, EOS, EOS, unk))
    assert not isinstance(got, str), got
    want = python_ids(folder, prompts, max_length, unk)
    for prompt, g, w in zip(prompts, got, want):
        assert g == w, f"{prompt!r}: C {g} != Python {w}"
    assert len(got) == len(prompts)


def test_merges_are_exercised(program, trained):
    ids = run_c(program, trained, ["a photo of an astronaut riding a horse"])[0]
    vocab = json.loads((trained / "vocab.json").read_text(encoding="utf-8"))
    assert ids[:ids.index(vocab[EOS])] == [vocab[BOS], vocab["a</w>"], vocab["photo</w>"], vocab["of</w>"],
                                           vocab["an</w>"], vocab["astronaut</w>"], vocab["riding</w>"],
                                           vocab["a</w>"], vocab["horse</w>"]]


def test_invalid_utf8_prompt_is_an_error(program, tiny):
    proc = subprocess.run([str(program), str(tiny / "vocab.json"), str(tiny / "merges.txt"), "77", BOS, EOS, EOS, EOS],
                          input=struct.pack("<I", 3) + b"a\xffb" + _record("ok"), capture_output=True)
    lines = proc.stdout.decode().splitlines()
    bos = json.loads((tiny / "vocab.json").read_text(encoding="utf-8"))[BOS]
    assert lines[0].startswith("error: prompt is not valid UTF-8") and lines[1].split()[0] == str(bos)


def _bad(folder: Path, tmp: Path, vocab=None, merges=None) -> Path:
    out = tmp / "bad"
    out.mkdir(exist_ok=True)
    for name, data in (("vocab.json", vocab), ("merges.txt", merges)):
        (out / name).unlink(missing_ok=True)
        if data is None:
            (out / name).write_bytes((folder / name).read_bytes())
        elif data != "missing":
            (out / name).write_bytes(data)
    return out


def _vocab_bytes(folder, edit):
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    edit(vocab)
    return json.dumps(vocab, ensure_ascii=False).encode("utf-8")


BAD_FILES = {
    "vocab missing": lambda f: dict(vocab="missing"),
    "merges missing": lambda f: dict(merges="missing"),
    "vocab truncated": lambda f: dict(vocab=(f / "vocab.json").read_bytes()[:-50]),
    "vocab not json": lambda f: dict(vocab=b"\x00\xff garbage"),
    "vocab a list": lambda f: dict(vocab=b"[1, 2, 3]"),
    "vocab negative id": lambda f: dict(vocab=_vocab_bytes(f, lambda v: v.update(a=-1))),
    "vocab string id": lambda f: dict(vocab=_vocab_bytes(f, lambda v: v.update(a="1"))),
    "vocab shared id": lambda f: dict(vocab=_vocab_bytes(f, lambda v: v.update(a=v["b"]))),
    "vocab without BOS": lambda f: dict(vocab=_vocab_bytes(f, lambda v: v.pop(BOS))),
    "merges three tokens": lambda f: dict(merges=(f / "merges.txt").read_bytes() + b"a b c\n"),
    "merges one token": lambda f: dict(merges=b"#version: 0.2\na\n"),
    "merges unknown token": lambda f: dict(merges=b"#version: 0.2\n\xe2\x82\xac q\n"),
    "merges result unknown": lambda f: dict(merges=b"#version: 0.2\nq z\n"),
    "merges not utf-8": lambda f: dict(merges=b"#version: 0.2\na \xff\n"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_give_an_error(program, tiny, tmp_path, case):
    folder = _bad(tiny, tmp_path, **BAD_FILES[case](tiny))
    got = run_c(program, folder, ["a cat"])
    assert isinstance(got, str) and got.startswith(str(folder)), got
    with pytest.raises((ArtifactError, FileNotFoundError)):
        python_ids(folder, ["a cat"])


def test_unicode_tables_are_generated(tmp_path):
    subprocess.run([sys.executable, str(NATIVE / "tools" / "gen_unicode_tables.py"), str(tmp_path / "t.h")], check=True)
    assert (tmp_path / "t.h").read_bytes() == (NATIVE / "src" / "unicode_tables.h").read_bytes(), \
        "runtimes/native/src/unicode_tables.h is stale: run runtimes/native/tools/gen_unicode_tables.py"
