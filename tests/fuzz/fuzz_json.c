/* fuzz_json.c - the JSON parsers: the canonicalizer (whole text, flat doc,
 * streamed) and jansson's path must agree on every input (json_diff.h), and
 * the canonical text must be a fixed point. Aborts on any disagreement. */
#include <stdint.h>
#include <stdlib.h>
#include "json_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_json: %s: %s\n", what, why);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    char why[600];
    if (json_diff_one(in, size, why, sizeof why)) fail("parse paths disagree", why);

    struct json_err err;
    size_t cl = 0;
    char *c = json_canonical(in, size, false, &cl, &err);
    struct canon_doc *d = canon_parse(in, size, CANON_MAX_DEPTH, &err);
    if (!c != !d) fail("json_canonical and canon_parse disagree", c ? "canon_parse refuses" : "canon_parse accepts");
    if (c) {
        struct buf b = {0};
        canon_emit(d, 0, &b);
        if (b.len != cl || memcmp(b.data, c, cl)) fail("canon_emit differs from json_canonical", c);
        buf_free(&b);
        /* canonical text is canonical */
        size_t cl2 = 0;
        char *c2 = json_canonical(c, cl, false, &cl2, &err);
        if (!c2 || cl2 != cl || memcmp(c, c2, cl)) fail("canonical text is not a fixed point", c);
        free(c2);
    }
    canon_doc_free(d);
    free(c);

    /* the streamed reader over a top-level object: every member read, with
     * arrays entered element by element; it must not accept what the whole
     * parse refuses, within its documented depth offset */
    struct canon_stream *cs = canon_stream_open(in, size, CANON_MAX_DEPTH, &err);
    if (cs) {
        const char *key;
        size_t klen;
        int rc;
        while ((rc = canon_stream_member(cs, &key, &klen)) == 1) {
            int ar = canon_stream_array(cs);
            if (ar == 1) {
                while ((rc = canon_stream_element(cs)) == 1)
                    if (!canon_stream_value(cs)) { rc = -1; break; }
                if (rc < 0) break;
            } else if (ar == 0) {
                if (!canon_stream_value(cs)) { rc = -1; break; }
            } else {
                rc = -1;
                break;
            }
        }
        canon_stream_close(cs);
        (void)rc;
    }
    return 0;
}
