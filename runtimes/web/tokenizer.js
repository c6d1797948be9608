// The CLIP BPE tokenizer in the browser, equal to runtimes/tokenizer.py (the `tokenizers` library set up
// as transformers' CLIPTokenizerFast, padding="max_length", truncation): NFC, whitespace runs to one space,
// lowercase; CLIP's split pattern; byte-level characters; BPE with "</w>" on each word's last symbol.

// Unicode White_Space, the `\s` of the `tokenizers` library's regex engine (JavaScript's \s differs:
// it adds U+FEFF and lacks U+0085)
const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const SPACES = new RegExp(`[${WS}]+`, "gu");
const PIECES = new RegExp(`'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${WS}\\p{L}\\p{N}]+`, "gu");
const SUFFIX = "</w>";

/** GPT-2's byte -> printable character table (byte-level BPE). */
export function byteAlphabet() {
  const keep = [];
  for (const [lo, hi] of [[33, 126], [161, 172], [174, 255]]) for (let b = lo; b <= hi; b++) keep.push(b);
  const table = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + extra++);
  return table;
}

export class TokenizerError extends Error {
  constructor(message) { super(message); this.name = "TokenizerError"; }
}

export class CLIPTokenizer {
  /** vocab: {token: id}; merges: the text of merges.txt; the options as the manifest's pipeline/tokenizer. */
  constructor(vocab, merges, {maxLength, bosToken, eosToken, padToken, unkToken}, where = "tokenizer") {
    for (const token of [bosToken, eosToken, padToken, unkToken])
      if (!(token in vocab)) throw new TokenizerError(`${where}: special token ${JSON.stringify(token)} is not in the vocabulary; rebuild the artifact.`);
    this.vocab = new Map(Object.entries(vocab));
    this.ranks = new Map();
    merges.split(/\r?\n/).forEach((line, number) => {
      if (line.startsWith("#version") || !line.trim()) return;
      const pair = line.trim().split(/\s+/);
      if (pair.length !== 2) throw new TokenizerError(`${where}: merges line ${number + 1} is not a pair of tokens; rebuild the artifact.`);
      if (!this.ranks.has(pair.join(" "))) this.ranks.set(pair.join(" "), this.ranks.size);
    });
    this.maxLength = maxLength;
    this.bos = vocab[bosToken];
    this.eos = vocab[eosToken];
    this.pad = vocab[padToken];
    this.unk = vocab[unkToken];
    this.bytes = byteAlphabet();
    this.encoder = new TextEncoder();
  }

  _bpe(piece) {
    const chars = Array.from(this.encoder.encode(piece), (b) => this.bytes[b]);
    let word = chars.map((c, i) => (i === chars.length - 1 ? c + SUFFIX : c));
    while (word.length > 1) {
      let best = -1, rank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < rank) { rank = r; best = i; }
      }
      if (best < 0) break;
      const [a, b] = [word[best], word[best + 1]];
      const merged = [];
      for (let i = 0; i < word.length; i++) {
        if (i < word.length - 1 && word[i] === a && word[i + 1] === b) { merged.push(a + b); i++; } else merged.push(word[i]);
      }
      word = merged;
    }
    return word.map((s) => this.vocab.get(s) ?? this.unk);
  }

  /** Token ids of one text, without BOS/EOS. */
  encode(text) {
    // lowercase one code point at a time, as the `tokenizers` library does (no final-sigma rule)
    const normal = Array.from(text.normalize("NFC").replace(SPACES, " "), (c) => c.toLowerCase()).join("");
    return (normal.match(PIECES) || []).flatMap((piece) => this._bpe(piece));
  }

  /** Ids [texts.length, maxLength] as one Int32Array, with BOS/EOS and padding, truncated keeping EOS. */
  call(texts) {
    const out = new Int32Array(texts.length * this.maxLength).fill(this.pad);
    texts.forEach((text, row) => {
      const ids = [this.bos, ...this.encode(text).slice(0, this.maxLength - 2), this.eos];
      out.set(ids, row * this.maxLength);
    });
    return out;
  }
}
