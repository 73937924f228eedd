/* fuzz_names.c - the name rules and the path-segment decoder: no crash, no
 * read past the input, and decoded output that obeys its contract (no NUL,
 * no '/', within capacity). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy so ASan sees any read past the end */
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    bool (*const rules[])(const char *, size_t) = {
        name_space_valid, name_collection_valid, name_entity_id_valid, name_peer_valid,
        name_sha256_valid, name_request_id_valid, name_asset_valid,
    };
    bool any = false;
    for (size_t i = 0; i < sizeof rules / sizeof *rules; i++) any = rules[i](s, size) || any;
    if (any && memchr(s, '\0', size)) {
        fprintf(stderr, "fuzz_names: a name with a NUL byte was accepted\n");
        abort();
    }
    char out[256];
    long n = name_pct_decode(s, size, out, sizeof out);
    if (n >= 0) {
        if ((size_t)n > sizeof out || memchr(out, '\0', (size_t)n) || memchr(out, '/', (size_t)n)) {
            fprintf(stderr, "fuzz_names: name_pct_decode broke its contract\n");
            abort();
        }
        if (name_space_valid(out, (size_t)n) && (size_t)n > 63) abort();
    }
    free(s);
    return 0;
}
