/* test_text_tokenizer VOCAB MERGES MAX_LENGTH BOS EOS PAD UNK < PROMPTS
   PROMPTS: records of a 4-byte little-endian length and that many bytes.
   Prints one line per prompt: its ids separated by spaces, or "error: MESSAGE".
   A tokenizer that does not open prints its error to stderr and exits 1. */
#include <stdio.h>
#include <stdlib.h>

#include "../src/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s VOCAB MERGES MAX_LENGTH BOS EOS PAD UNK < PROMPTS\n", argv[0]);
        return 2;
    }
    char err[512] = "";
    eg_tokenizer *tok = NULL;
    int max_length = atoi(argv[3]);
    if (eg_tokenizer_open(argv[1], argv[2], max_length, argv[4], argv[5], argv[6], argv[7], &tok, err,
                          sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int32_t *ids = malloc(sizeof *ids * (size_t)max_length);
    unsigned char head[4];
    int rc = 0;
    while (ids && fread(head, 1, 4, stdin) == 4) {
        size_t len = head[0] | (size_t)head[1] << 8 | (size_t)head[2] << 16 | (size_t)head[3] << 24;
        char *text = malloc(len ? len : 1);
        if (!text || fread(text, 1, len, stdin) != len) {
            free(text);
            rc = 2;
            break;
        }
        if (eg_tokenizer_encode(tok, text, len, ids, err, sizeof err)) {
            printf("error: %s\n", err);
        } else {
            for (int i = 0; i < max_length; i++)
                printf(i ? " %d" : "%d", (int)ids[i]);
            printf("\n");
        }
        free(text);
    }
    free(ids);
    eg_tokenizer_free(tok);
    return rc;
}
