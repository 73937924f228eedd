/* push.c - see push.h. */
#include "svc/push.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/canon.h"
#include "core/names.h"

static void item_err(struct push_item *it, const char *code, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void item_err(struct push_item *it, const char *code, const char *fmt, ...)
{
    va_list ap;
    it->err_code = code;
    va_start(ap, fmt);
    vsnprintf(it->err_msg, sizeof it->err_msg, fmt, ap);
    va_end(ap);
}

/* A push (docs/api.md, Change feed) is {"changes":[...]}; each change has these members. An
 * unknown member at the top refuses the whole push (400); one in a change
 * is that change's error (its result says so; the others apply), as for
 * any other malformed change. */
static const char *const push_members[] = {"changes", NULL};
static const char *const change_members[] = {"collection", "id", "base_rev", "deleted", "body", NULL};

/* One change, read from its own parse (the stream's current value): names
 * read whole (a NUL in one is never cut short to a shorter name), the body
 * written canonical straight from that parse and held to JSON_MAX_DEPTH
 * counted in itself, as a PUT's. Anything wrong is this change's error. */
static void push_item_parse(struct push_item *it, const struct canon_doc *d, size_t index)
{
    const uint32_t v = 0;
    if (canon_type(d, v) != CANON_OBJ) { item_err(it, "invalid_item", "each change must be an object"); return; }
    const char *unknown = canon_unknown_member(d, v, change_members);
    if (unknown) {
        struct json_err e;
        char where[40];
        snprintf(where, sizeof where, "changes[%zu]", index);
        json_unknown_member_err(&e, where, unknown, change_members);
        item_err(it, "unknown_member", "%s", e.message);
        return;
    }
    size_t cl, il, bl;
    const char *c = canon_name(d, canon_member(d, v, "collection"), &cl);
    const char *id = canon_name(d, canon_member(d, v, "id"), &il);
    if (!c || !name_collection_valid(c, cl)) { item_err(it, "invalid_name", "invalid or missing collection"); return; }
    if (!id || !name_entity_id_valid(id, il)) { item_err(it, "invalid_name", "invalid or missing id"); return; }
    memcpy(it->collection, c, cl + 1);
    memcpy(it->id, id, il + 1);
    uint32_t base = canon_member(d, v, "base_rev");
    if (base != CANON_NONE && canon_type(d, base) != CANON_NULL) {
        const char *br = canon_name(d, base, &bl);
        if (!br || !rev_valid(br)) {
            item_err(it, "invalid_rev", "base_rev must be null or a rev like \"3-9f2c4a1b7d3e0c55\" (N from 1 to "
                     "%llu, no leading zero)", REV_N_MAX);
            return;
        }
        it->has_base = true;
        memcpy(it->base_rev, br, bl + 1);
    }
    enum canon_type dt = canon_type(d, canon_member(d, v, "deleted"));
    if (dt != CANON_ABSENT && dt != CANON_TRUE && dt != CANON_FALSE) {
        item_err(it, "invalid_item", "deleted must be true or false");
        return;
    }
    it->deleted = dt == CANON_TRUE;
    uint32_t body = canon_member(d, v, "body");
    if (!it->deleted) {
        if (canon_type(d, body) != CANON_OBJ) { item_err(it, "invalid_item", "body must be a JSON object"); return; }
        if (canon_depth(d, body) > JSON_MAX_DEPTH) {
            item_err(it, "too_deep", "the body is nested deeper than %d levels", JSON_MAX_DEPTH);
            return;
        }
        struct buf out;
        buf_init(&out);
        canon_emit(d, body, &out);
        it->body = buf_steal(&out, &it->body_len);
    }
}

static void push_fail(struct push_batch *pb, int status, const char *code, const char *msg)
{
    pb->err_status = status;
    snprintf(pb->err.code, sizeof pb->err.code, "%s", code);
    snprintf(pb->err.message, sizeof pb->err.message, "%s", msg);
}

/* push.h. The body (up to --max-body-bytes) parsed, every item checked
 * and its body canonicalized, so neither the loop nor the writer parses.
 * The canonicalizer's streaming reader, as /replicate and PUT use: one
 * parser, one depth rule and one canonical form for every route that
 * writes a body. A change at a time: memory for one change's parse. */
void push_batch_parse(struct push_batch *pb, const char *raw, size_t len)
{
    memset(pb, 0, sizeof *pb);
    struct canon_stream *cs = canon_stream_open(raw, len, JSON_REQUEST_MAX_DEPTH, &pb->err);
    const char *key;
    size_t kl, cap = 0;
    int rc = cs ? 0 : -1;
    bool have = false, bad_changes = false, too_many = false;
    char unknown[64] = "";
    while (cs && (rc = canon_stream_member(cs, &key, &kl)) == 1) {
        if (!json_member_known(key, push_members)) {
            /* refused once the text is known to be valid JSON */
            if (!unknown[0]) snprintf(unknown, sizeof unknown, "%s", key);
        } else if ((rc = canon_stream_array(cs)) == 1) {          /* "changes" */
            have = true;
            while ((rc = canon_stream_element(cs)) == 1) {
                if (pb->n == PUSH_MAX_ITEMS) {
                    too_many = true;
                    break;
                }
                const struct canon_doc *d = canon_stream_value(cs);
                if (!d) { rc = -1; break; }
                if (pb->n == cap) {
                    cap = cap ? cap * 2 : 64;
                    pb->items = xrealloc(pb->items, cap * sizeof *pb->items);
                }
                struct push_item *it = &pb->items[pb->n++];
                memset(it, 0, sizeof *it);
                push_item_parse(it, d, pb->n - 1);
            }
            if (rc < 0 || too_many) break;
            continue;
        }
        if (rc < 0) break;
        if (!canon_stream_value(cs)) { rc = -1; break; }     /* "changes" that is not an array, or unknown */
        if (json_member_known(key, push_members)) bad_changes = true;
    }
    canon_stream_close(cs);
    if (too_many) {
        char m[64];
        snprintf(m, sizeof m, "at most %d changes per push", PUSH_MAX_ITEMS);
        push_fail(pb, 413, "too_many_changes", m);
    } else if (rc < 0) {
        pb->err_status = 400;                        /* pb->err: invalid_json, too_deep, not_an_object */
    } else if (unknown[0]) {
        pb->err_status = 400;
        json_unknown_member_err(&pb->err, "the request body", unknown, push_members);
    } else if (!have || bad_changes) {
        push_fail(pb, 400, "invalid_body", "expected {\"changes\":[...]}");
    }
}

void push_batch_free(struct push_batch *pb)
{
    if (!pb) return;
    for (size_t i = 0; i < pb->n; i++) free(pb->items[i].body);
    free(pb->items);
    pb->items = NULL;
    pb->n = 0;
}
