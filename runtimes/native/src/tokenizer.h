#ifndef EG_TOKENIZER_H
#define EG_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/* CLIP BPE as runtimes/tokenizer.py (the `tokenizers` library) encodes: NFC, whitespace runs -> one space,
   lowercase, CLIP's split regex, byte-level mapping, BPE with the "</w>" end-of-word suffix, then
   BOS + at most max_length - 2 tokens + EOS, padded to max_length. */
typedef struct eg_tokenizer eg_tokenizer;

int eg_tokenizer_open(const char *vocab_json_path, const char *merges_txt_path, int max_length, const char *bos,
                      const char *eos, const char *pad, const char *unk, eg_tokenizer **out, char *err,
                      size_t errlen);
/* ids: max_length entries. utf8 must be valid UTF-8. */
int eg_tokenizer_encode(const eg_tokenizer *tok, const char *utf8, size_t len, int32_t *ids, char *err,
                        size_t errlen);
int eg_tokenizer_max_length(const eg_tokenizer *tok);
void eg_tokenizer_free(eg_tokenizer *tok);

#endif
