/* push.h - the parse of a push (POST /changes {"changes":[...]}), apart from
 * its apply: pure (no database, no loop), so api/changes.c runs it on the
 * threadpool and the fuzz target (tests/fuzz/fuzz_push.c) runs it alone.
 * Any thread. */
#ifndef SNAPSYNC_PUSH_H
#define SNAPSYNC_PUSH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/entity.h"
#include "core/json.h"

#define PUSH_MAX_ITEMS 1000

/* One change, checked: names valid, base_rev valid or absent, body
 * canonical; or err_code set (that change's error, the others apply). */
struct push_item {
    char collection[64], id[129];
    bool has_base;
    char base_rev[REV_MAX];
    bool deleted;
    char *body;                      /* canonical, or NULL */
    size_t body_len;
    /* pre-validation failure */
    const char *err_code;
    char err_msg[160];
};

struct push_batch {
    int err_status;                  /* 0, or the whole push refused: 400 or 413 with err */
    struct json_err err;
    size_t n;                        /* items parsed (at most PUSH_MAX_ITEMS) */
    struct push_item *items;
};

/* Any thread: parses raw into pb (which it zeroes first). Never fails as a
 * call: a refused push has err_status set. pb is always safe to free. */
void push_batch_parse(struct push_batch *pb, const char *raw, size_t len);
void push_batch_free(struct push_batch *pb);

#endif
