/* rep_parse.c - the parse half of replication (replicate.h): a
 * /replicate body or a /changes?style=all_revs page into a struct
 * rep_batch. One canon parse of the whole text, a member and an entity at a
 * time; every entity checked, bodies written canonical straight from that
 * parse, so the writer (replicate.c) only decides and writes. Pure: no
 * database, no loop; any thread but the loop (the threadpool in practice,
 * and the fuzz target alone).
 */
#include "svc/replicate.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/canon.h"
#include "core/json.h"
#include "core/names.h"

static size_t text_put(struct buf *t, const char *s, size_t len)
{
    size_t off = t->len;
    buf_append(t, s, len);
    buf_putc(t, '\0');
    return off;
}

/* "revs" as a space-separated history without the current rev. */
static int history_of(const struct canon_doc *d, uint32_t revs, const char *rev, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    if (revs == CANON_NONE) return 0;
    if (canon_type(d, revs) != CANON_ARR) return -1;
    int count = 0;
    bool first = true;
    for (uint32_t v = canon_first(d, revs); v != CANON_NONE; v = canon_next(d, v), first = false) {
        size_t l;
        const char *r = canon_name(d, v, &l);
        if (!r || !rev_valid(r)) return -1;
        if (first && !strcmp(r, rev)) continue;      /* the list may start with the rev itself */
        if (count == REV_HISTORY - 1) break;
        if (n + l + 2 >= cap) break;
        if (n) out[n++] = ' ';
        memcpy(out + n, r, l + 1);
        n += l;
        count++;
    }
    return 0;
}

/* a string member that becomes a name: NULL if absent, not a string, or
 * holding a NUL (an inner NUL is never a valid name) */
static const char *str_member(const struct canon_doc *d, uint32_t obj, const char *key, size_t *len)
{
    return canon_name(d, canon_member(d, obj, key), len);
}

static void blob_ref_add(struct rep_batch *b, const char *h)
{
    for (size_t i = 0; i < b->nblobs; i++)
        if (!strcmp(b->blobs[i], h)) return;
    if (b->nblobs % 16 == 0) b->blobs = xrealloc(b->blobs, (b->nblobs + 16) * sizeof *b->blobs);
    memcpy(b->blobs[b->nblobs++], h, 65);
}

/* Returns -1: the item cannot apply (item_parse returns it). */
static int item_fail(struct rep_item *it, const char *code, const char *msg)
{
    it->err_code = code;
    it->err = msg;
    return -1;
}

#define REV_SHAPE "a rev like \"3-9f2c4a1b7d3e0c55\" (N from 1 to 9007199254740991, no leading zero)"

/* A body is held to JSON_MAX_DEPTH counted in itself, as a PUT is. */
static bool body_too_deep(const struct canon_doc *d, uint32_t body)
{
    return canon_depth(d, body) > JSON_MAX_DEPTH;
}

/* Checks one entity of a page and keeps it in b's text; a bad entity is
 * not an error of the batch but an item with err set (its result says
 * why; the others apply). Its collection and id are kept when they are
 * valid, so that even its error names it. */
static int item_parse(struct rep_batch *b, struct rep_item *it, const struct canon_doc *d, uint32_t e)
{
    if (canon_type(d, e) != CANON_OBJ) return item_fail(it, "invalid_item", "each entity must be an object");
    size_t cl = 0, il = 0, rl = 0;
    const char *c = str_member(d, e, "collection", &cl), *id = str_member(d, e, "id", &il),
               *rev = str_member(d, e, "rev", &rl);
    bool c_ok = c && name_collection_valid(c, cl), id_ok = id && name_entity_id_valid(id, il);
    if (c_ok && id_ok) {
        memcpy(it->collection, c, cl + 1);
        memcpy(it->id, id, il + 1);
    }
    uint32_t del = canon_member(d, e, "deleted");
    enum canon_type dt = canon_type(d, del);
    char hist[REV_HISTORY * REV_MAX];
    if (!c_ok) return item_fail(it, "invalid_name", "invalid or missing collection");
    if (!id_ok) return item_fail(it, "invalid_name", "invalid or missing id");
    if (!rev || !rev_valid(rev)) return item_fail(it, "invalid_rev", "rev must be " REV_SHAPE);
    if (history_of(d, canon_member(d, e, "revs"), rev, hist, sizeof hist) < 0)
        return item_fail(it, "invalid_rev", "revs must be a list of revs, each " REV_SHAPE);
    if (del != CANON_NONE && dt != CANON_TRUE && dt != CANON_FALSE)
        return item_fail(it, "invalid_item", "deleted must be true or false");
    it->deleted = dt == CANON_TRUE;
    uint32_t body = canon_member(d, e, "body");
    if (!it->deleted && canon_type(d, body) != CANON_OBJ)
        return item_fail(it, "invalid_item", "a live entity needs an object body");
    if (!it->deleted && body_too_deep(d, body))
        return item_fail(it, "too_deep", "the body is nested deeper than 64 levels");
    /* conflict records that travel with the entity: every one is checked
     * before anything is kept, as the entity is (a record dropped here
     * would leave this instance listing fewer conflicts than the sender) */
    uint32_t cl_node = canon_member(d, e, "conflicts");
    enum canon_type ct = canon_type(d, cl_node);
    if (ct != CANON_ABSENT && ct != CANON_NULL && ct != CANON_ARR)
        return item_fail(it, "invalid_item", "conflicts must be a list of conflict records");
    for (uint32_t cv = canon_first(d, cl_node); cv != CANON_NONE; cv = canon_next(d, cv)) {
        const char *crev = str_member(d, cv, "rev", NULL);
        if (canon_type(d, cv) != CANON_OBJ || !crev || !rev_valid(crev))
            return item_fail(it, "invalid_rev", "each conflict record needs a rev, " REV_SHAPE);
        uint32_t cb = canon_member(d, cv, "body");
        if (canon_type(d, cb) == CANON_OBJ && body_too_deep(d, cb))
            return item_fail(it, "too_deep", "a conflict record's body is nested deeper than 64 levels");
    }
    memcpy(it->rev, rev, rl + 1);
    it->hist_off = text_put(&b->text, hist, strlen(hist));
    if (!it->deleted) {
        it->body_off = b->text.len;
        canon_emit(d, body, &b->text);
        it->body_len = b->text.len - it->body_off;
        buf_putc(&b->text, '\0');
        it->has_body = true;
        /* blobs the body references move before it is applied (one that is
         * not a valid hash is refused by blobs_check when it is applied) */
        uint32_t bl = canon_member(d, body, "_blobs");
        for (uint32_t h = canon_first(d, bl); h != CANON_NONE; h = canon_next(d, h)) {
            size_t hl;
            const char *x = canon_name(d, h, &hl);
            if (x && name_sha256_valid(x, hl)) blob_ref_add(b, x);
        }
    }
    it->conf_first = b->nconfs;
    for (uint32_t cv = canon_first(d, cl_node); cv != CANON_NONE; cv = canon_next(d, cv)) {
        size_t crl;
        const char *crev = str_member(d, cv, "rev", &crl);
        if (b->nconfs == b->capconfs) {
            b->capconfs = b->capconfs ? b->capconfs * 2 : 16;
            b->confs = xrealloc(b->confs, b->capconfs * sizeof *b->confs);
        }
        struct rep_conf *k = &b->confs[b->nconfs++];
        memset(k, 0, sizeof *k);
        memcpy(k->rev, crev, crl + 1);
        k->deleted = canon_type(d, canon_member(d, cv, "deleted")) == CANON_TRUE;
        uint32_t cb = canon_member(d, cv, "body");
        if (!k->deleted && canon_type(d, cb) == CANON_OBJ) {
            k->body_off = b->text.len;
            canon_emit(d, cb, &b->text);
            k->body_len = b->text.len - k->body_off;
            buf_putc(&b->text, '\0');
            k->has_body = true;
        }
        it->nconf++;
    }
    return 0;
}

static void batch_items_reset(struct rep_batch *b)
{
    b->n = 0;
    b->nconfs = 0;
    b->nblobs = 0;
    buf_reset(&b->text);
    b->text.len = 0;
}

/* The top level of a /replicate body: a /changes page as it is, and who
 * sent it. Its entities are not checked member by member: they are the
 * feed's entity rows (version, created_at, ...), whose shape may grow from
 * one version of snapsync to the next, and peers of both must still sync. */
const char *const rep_members[] = {"entities", "changes", "last_version", "more", "source_instance", NULL};

int rep_batch_parse(struct rep_batch *b, const char *raw, size_t len, struct json_err *err)
{
    memset(b, 0, sizeof *b);
    buf_init(&b->text);
    /* one member, and one entity, at a time: memory for one entity's parse,
     * not the page's. A body may nest as deep as a PUT allows, counted in
     * the body (item_parse: too_deep is that entity's error); the page as a
     * whole up to JSON_REQUEST_MAX_DEPTH, past what any entity can be. */
    struct canon_stream *cs = canon_stream_open(raw, len, JSON_REQUEST_MAX_DEPTH, err);
    if (!cs) return -1;
    buf_reserve(&b->text, len);
    size_t cap = 0;
    int from = 0;                    /* where the items came from: 1 "changes", 2 "entities" */
    const char *key;
    size_t kl;
    int rc;
    while ((rc = canon_stream_member(cs, &key, &kl)) == 1) {
        if (!b->unknown[0] && !json_member_known(key, rep_members))
            snprintf(b->unknown, sizeof b->unknown, "%.*s", (int)(kl < 63 ? kl : 63), key);
        int which = !strcmp(key, "entities") ? 2 : !strcmp(key, "changes") ? 1 : 0;
        const struct canon_doc *d;
        if (which && which >= from && (rc = canon_stream_array(cs)) == 1) {
            if (from) batch_items_reset(b);          /* "entities" wins over "changes" */
            from = which;
            while ((rc = canon_stream_element(cs)) == 1) {
                if (!(d = canon_stream_value(cs))) { rc = -1; break; }
                if (b->n == cap) {
                    cap = cap ? cap * 2 : 256;
                    b->items = xrealloc(b->items, cap * sizeof *b->items);
                }
                struct rep_item *it = &b->items[b->n++];
                memset(it, 0, sizeof *it);
                item_parse(b, it, d, 0);      /* a bad entity is its own error */
            }
            if (rc < 0) break;
            continue;
        }
        if (rc < 0) break;
        if (!(d = canon_stream_value(cs))) { rc = -1; break; }
        int64_t v;
        size_t sl;
        const char *str;
        if (!strcmp(key, "last_version")) {
            b->has_last = canon_int(d, 0, &v) && v >= 0;
            b->last_version = b->has_last ? (uint64_t)v : 0;
        } else if (!strcmp(key, "more")) {
            b->more = canon_type(d, 0) == CANON_TRUE;
        } else if (!strcmp(key, "source_instance") && (str = canon_name(d, 0, &sl)) && ulid_valid(str, sl)) {
            memcpy(b->source_instance, str, sl + 1);
        } else if (which && which >= from) {
            from = -1;                                /* "changes"/"entities" that is not an array */
        }
    }
    canon_stream_close(cs);
    if (rc < 0) return -1;
    if (from <= 0) {
        snprintf(err->code, sizeof err->code, "invalid_body");
        snprintf(err->message, sizeof err->message, "expected {\"entities\":[...]} or a changes page");
        return -1;
    }
    if (!b->items) b->items = xcalloc(1, sizeof *b->items);
    return 0;
}

void rep_batch_free(struct rep_batch *b)
{
    if (!b) return;
    free(b->items);
    free(b->confs);
    free(b->blobs);
    buf_free(&b->text);
    memset(b, 0, sizeof *b);
}

