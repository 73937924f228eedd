/* json_diff.h - the differential check of the two JSON parse paths, shared
 * by the unit test (tests/unit/test_json_diff.c) and the fuzz target
 * (tests/fuzz/fuzz_json.c).
 *
 * Path A is the canonicalizer (canon.c): PUT bodies, pushes and /replicate.
 * Path B is jansson (json_parse) followed by entity_canonical_value: what a
 * body inside a jansson-parsed request becomes. For the same bytes both must
 * accept or both refuse, and when they accept, give the same canonical
 * bytes. */
#ifndef SNAPSYNC_JSON_DIFF_H
#define SNAPSYNC_JSON_DIFF_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/canon.h"
#include "core/entity.h"
#include "core/json.h"

/* 0 when both paths agree; else 1 with why filled. */
static int json_diff_one(const char *in, size_t len, char *why, size_t whylen)
{
    struct json_err ea, eb;
    size_t la = 0, lb = 0;
    char *a = json_canonical(in, len, false, &la, &ea);
    char *b = NULL;
    json_t *v = json_parse(in, len, false, &eb);
    if (v) {
        b = entity_canonical_value(v, &lb, &eb);
        json_decref(v);
    }
    int bad = 0;
    if (!a != !b) {
        snprintf(why, whylen, "canon %s (%s), jansson %s (%s)", a ? "accepts" : "refuses", a ? a : ea.message,
                 b ? "accepts" : "refuses", b ? b : eb.message);
        bad = 1;
    } else if (a && (la != lb || memcmp(a, b, la))) {
        snprintf(why, whylen, "both accept, different bytes: canon %.*s, jansson %.*s", (int)(la > 200 ? 200 : la), a,
                 (int)(lb > 200 ? 200 : lb), b);
        bad = 1;
    }
    free(a);
    free(b);
    return bad;
}

#endif
