/* fuzz_push.c - the item parsers of pushes and replication: the same bytes
 * to push_batch_parse (POST /changes) and rep_batch_parse (POST /replicate,
 * and a /changes?style=all_revs page a sync pull reads), as they are and
 * wrapped as one item ({"changes":[<bytes>]}, {"entities":[<bytes>]}) so
 * the item checks are reached from any value. Aborts unless every item is
 * either an error or fully valid: names valid on their whole decoded
 * length, revs valid, bodies canonical (json_canonical of themselves), and
 * no more items than the input's array holds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/canon.h"
#include "core/entity.h"
#include "core/names.h"
#include "svc/push.h"
#include "svc/sync.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_push: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* body (len bytes, NUL-terminated) is an object in canonical form */
static void check_canonical(const char *body, size_t len, const char *who)
{
    if (!body) fail(who, "a live item without a body");
    if (body[len] != '\0' || len < 2 || body[0] != '{') fail(who, "a body that is not an object");
    struct json_err err;
    size_t cl = 0;
    char *c = json_canonical(body, len, true, &cl, &err);
    if (!c) fail(who, "a body json_canonical refuses");
    if (cl != len || memcmp(c, body, len)) fail(who, "a body that is not canonical");
    free(c);
}

/* the decoded string of member key of item node e is exactly name */
static void check_whole(const struct canon_doc *d, uint32_t e, const char *key, const char *name, const char *who)
{
    size_t l = 0;
    const char *s = canon_str(d, canon_member(d, e, key), &l);
    if (!s || l != strlen(name) || memcmp(s, name, l)) fail(who, "a name kept that is not the whole member");
}

/* Elements of the array member key of the whole text's top object, or -1
 * when the whole text is refused (the stream parse must then refuse too,
 * or not reach its items). */
static long array_len(const struct canon_doc *d, const char *key)
{
    uint32_t a = canon_member(d, 0, key);
    return canon_type(d, a) == CANON_ARR ? (long)canon_count(d, a) : -1;
}

static void check_push(const char *in, size_t len, const struct canon_doc *whole)
{
    struct push_batch pb;
    push_batch_parse(&pb, in, len);
    if (pb.n > PUSH_MAX_ITEMS) fail("push", "more items than PUSH_MAX_ITEMS");
    if (pb.err_status == 0) {
        if (!whole) fail("push", "accepted a text canon_parse refuses");
        long al = array_len(whole, "changes");
        if (al < 0 || (size_t)al != pb.n) fail("push", "item count differs from the array's length");
    } else if (pb.err_status != 400 && pb.err_status != 413) {
        fail("push", "a refusal that is neither 400 nor 413");
    } else if (!pb.err.code[0]) {
        fail("push", "a refusal without a code");
    }
    /* items of a refused push are still checked (they were parsed before
     * the refusal); their nodes in the whole parse only when it accepted */
    uint32_t e = whole && pb.err_status == 0 ? canon_first(whole, canon_member(whole, 0, "changes")) : CANON_NONE;
    for (size_t i = 0; i < pb.n; i++, e = e == CANON_NONE ? e : canon_next(whole, e)) {
        const struct push_item *it = &pb.items[i];
        if (it->err_code) {
            if (!it->err_msg[0]) fail("push", "an item error without a message");
            if (it->body) fail("push", "an item error that kept a body");
            continue;
        }
        if (!name_collection_valid(it->collection, strlen(it->collection))) fail("push", "invalid collection kept");
        if (!name_entity_id_valid(it->id, strlen(it->id))) fail("push", "invalid id kept");
        if (it->has_base && !rev_valid(it->base_rev)) fail("push", "invalid base_rev kept");
        if (it->deleted) {
            if (it->body) fail("push", "a deletion with a body");
        } else {
            check_canonical(it->body, it->body_len, "push");
        }
        if (e != CANON_NONE) {
            check_whole(whole, e, "collection", it->collection, "push");
            check_whole(whole, e, "id", it->id, "push");
        }
    }
    push_batch_free(&pb);
}

static void check_rep(const char *in, size_t len, const struct canon_doc *whole)
{
    struct rep_batch b;
    struct json_err err;
    int rc = rep_batch_parse(&b, in, len, &err);
    if (rc == 0) {
        if (!whole) fail("replicate", "accepted a text canon_parse refuses");
        long al = array_len(whole, "entities");
        const char *key = "entities";
        if (al < 0) { al = array_len(whole, "changes"); key = "changes"; }
        if (al < 0 || (size_t)al != b.n) fail("replicate", "item count differs from the array's length");
        uint32_t e = canon_first(whole, canon_member(whole, 0, key));
        for (size_t i = 0; i < b.n; i++, e = canon_next(whole, e)) {
            const struct rep_item *it = &b.items[i];
            if (it->collection[0]) {
                if (!name_collection_valid(it->collection, strlen(it->collection)) ||
                    !name_entity_id_valid(it->id, strlen(it->id)))
                    fail("replicate", "invalid name kept");
                check_whole(whole, e, "collection", it->collection, "replicate");
                check_whole(whole, e, "id", it->id, "replicate");
            }
            if (it->err_code) {
                if (!it->err || !it->err[0]) fail("replicate", "an item error without a message");
                continue;
            }
            if (!it->collection[0]) fail("replicate", "an item without a name and without an error");
            if (!rev_valid(it->rev)) fail("replicate", "invalid rev kept");
            const char *hist = b.text.data + it->hist_off;
            int nh = 0;
            for (const char *p = hist; *p;) {
                const char *sp = strchr(p, ' ');
                size_t l = sp ? (size_t)(sp - p) : strlen(p);
                char r[REV_MAX + 1];
                if (l >= sizeof r) fail("replicate", "a history rev too long");
                memcpy(r, p, l);
                r[l] = '\0';
                if (!rev_valid(r)) fail("replicate", "invalid rev in history");
                nh++;
                if (!sp) break;
                p = sp + 1;
            }
            if (nh > REV_HISTORY - 1) fail("replicate", "history longer than REV_HISTORY - 1");
            if (it->deleted == it->has_body) fail("replicate", "deleted and has_body disagree");
            if (it->has_body) check_canonical(b.text.data + it->body_off, it->body_len, "replicate");
            if (it->conf_first + it->nconf > b.nconfs) fail("replicate", "conflict records out of range");
            for (uint32_t k = 0; k < it->nconf; k++) {
                const struct rep_conf *cf = &b.confs[it->conf_first + k];
                if (!rev_valid(cf->rev)) fail("replicate", "invalid conflict rev kept");
                if (cf->has_body) check_canonical(b.text.data + cf->body_off, cf->body_len, "replicate conflict");
            }
        }
        for (size_t k = 0; k < b.nblobs; k++)
            if (!name_sha256_valid(b.blobs[k], strnlen(b.blobs[k], 65))) fail("replicate", "invalid blob hash kept");
        if (b.source_instance[0] && !ulid_valid(b.source_instance, strlen(b.source_instance)))
            fail("replicate", "invalid source_instance kept");
    } else if (!err.code[0]) {
        fail("replicate", "a refusal without a code");
    }
    rep_batch_free(&b);
}

static void run(const char *in, size_t len)
{
    struct json_err err;
    struct canon_doc *whole = canon_parse(in, len, JSON_REQUEST_MAX_DEPTH, &err);
    check_push(in, len, whole);
    check_rep(in, len, whole);
    canon_doc_free(whole);
}

static void run_wrapped(const char *pre, const uint8_t *data, size_t size)
{
    size_t pl = strlen(pre);
    char *w = malloc(pl + size + 2);
    if (!w) return;
    memcpy(w, pre, pl);
    memcpy(w + pl, data, size);
    memcpy(w + pl + size, "]}", 2);
    run(w, pl + size + 2);
    free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy so ASan sees any read past the end */
    char *in = malloc(size ? size : 1);
    if (!in) return 0;
    memcpy(in, data, size);
    run(in, size);
    free(in);
    run_wrapped("{\"changes\":[", data, size);
    run_wrapped("{\"entities\":[", data, size);
    return 0;
}
