/* util.c - see util.h. */
#include "api/util.h"

#include <stdio.h>
#include <stdlib.h>

#include "svc/auth.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "net/server.h"
#include "store/store.h"

/* the default answer of a read job (read_attach) */
static void read_answer(struct read_job *rj, struct http_req *r)
{
    if (err_failed(&rj->err)) http_send_err(r, &rj->err);
    else if (rj->done) rj->done(rj, r);
    else http_send_json(r, 200, &rj->out);
}

void api_read_attach(struct server *srv) { read_attach(srv->store, &srv->jobs, srv->writer, read_answer); }

void read_submit(struct http_req *r, struct read_job *rj, read_fn fn, read_done_fn done)
{
    read_start(r->srv->store, r, rj, fn, done);
}

static bool cursor_valid(enum list_cursor kind, const char *s, size_t len, uint64_t *num)
{
    switch (kind) {
    case LIST_CURSOR_SPACE: return name_space_valid(s, len);
    case LIST_CURSOR_COLLECTION: return name_collection_valid(s, len);
    case LIST_CURSOR_ENTITY: return name_entity_id_valid(s, len);
    case LIST_CURSOR_PEER: return name_peer_valid(s, len);
    case LIST_CURSOR_ULID: return ulid_valid(s, len);
    case LIST_CURSOR_NUMBER: return parse_u64(s, len, INT64_MAX, num) == 0 && *num > 0;
    case LIST_NO_CURSOR: break;
    }
    return false;
}

int api_list_parse(const char *query, size_t qlen, enum list_cursor kind, struct list_page *p, char *why,
                   size_t whycap)
{
    char v[32];
    memset(p, 0, sizeof *p);
    p->limit = LIST_DEFAULT;
    long l = http_query_in(query, qlen, "limit", v, sizeof v);
    if (l != -1 && (l <= 0 || parse_u64(v, (size_t)l, LIST_MAX, &p->limit) < 0 || p->limit == 0)) {
        snprintf(why, whycap, "limit must be a whole number from 1 to %d", LIST_MAX);
        return -1;
    }
    if (kind == LIST_NO_CURSOR) return 0;
    l = http_query_in(query, qlen, "cursor", p->cursor, sizeof p->cursor);
    if (l == -1) {
        p->cursor[0] = '\0';
        return 0;
    }
    if (l < 0 || !cursor_valid(kind, p->cursor, (size_t)l, &p->cursor_num)) {
        p->cursor[0] = '\0';
        p->cursor_num = 0;
        snprintf(why, whycap, "cursor is not one this server gave out (the next_cursor of a page of this list)");
        return -1;
    }
    return 0;
}

int api_paging(struct http_req *r, enum list_cursor kind, struct list_page *p)
{
    char why[160];
    if (api_list_parse(r->query, r->query_len, kind, p, why, sizeof why) == 0) return 0;
    http_send_error(r, 400, "invalid_parameter", NULL, "%s", why);
    return -1;
}

long api_query(struct http_req *r, const char *name, char *out, size_t cap)
{
    long l = http_query(r, name, out, cap);
    if (l == -2)
        http_send_error(r, 400, "invalid_parameter", NULL, "%s is malformed (a bad %%-escape, an escaped NUL, or too long)",
                        name);
    if (l < 0) out[0] = '\0';
    return l;
}

struct space *api_space(struct http_req *r)
{
    struct space *sp = spaces_get(r->srv->spaces, r->match.params.space);
    if (!sp) http_send_error(r, 404, "space_not_found", NULL, "no space named '%s'", r->match.params.space);
    return sp;
}

void api_send_json_err(struct http_req *r, int status, const struct json_err *e)
{
    struct buf extra;
    buf_init(&extra);
    if (e->member[0]) {
        buf_puts(&extra, "\"member\":");
        json_cstr(&extra, e->member);
    }
    http_send_error(r, status, e->code, extra.len ? extra.data : NULL, "%s", e->message);
    buf_free(&extra);
}

json_t *api_body_members(struct http_req *r, const char *const *allowed)
{
    return api_body_members_data(r, allowed, NULL);
}

json_t *api_body_members_data(struct http_req *r, const char *const *allowed, const char *const *data)
{
    struct json_err e;
    /* a member that is an entity body nests as deep as any body may; the
     * canonicalizer holds it to JSON_MAX_DEPTH counted in itself */
    json_t *v = json_parse_depth(r->body.data ? r->body.data : "", r->body.len, true,
                                 data ? JSON_REQUEST_MAX_DEPTH : JSON_MAX_DEPTH, &e);
    if (!v) {
        api_send_json_err(r, 400, &e);
        return NULL;
    }
    const char *k = json_unknown_member(v, allowed);
    if (k) {
        json_unknown_member_err(&e, "the request body", k, allowed);
        json_decref(v);
        api_send_json_err(r, 400, &e);
        return NULL;
    }
    /* every other string is a name or an option: json_string_value would
     * read "p1\u0000x" as "p1", so one with a NUL is refused here, for
     * every route, before any handler reads it */
    char path[128];
    if (json_find_nul(v, data, path, sizeof path)) {
        snprintf(e.code, sizeof e.code, "invalid_string");
        snprintf(e.member, sizeof e.member, "%.*s", (int)strcspn(path, ".["), path);
        snprintf(e.message, sizeof e.message, "%s holds \\u0000 (a NUL character), which no name or option may "
                 "contain", path);
        json_decref(v);
        api_send_json_err(r, 400, &e);
        return NULL;
    }
    return v;
}

const char *api_actor(const struct http_req *r) { return auth_key(r) ? auth_key(r)->id : "anonymous"; }

int api_write(struct http_req *r, struct wop *op, wop_apply_fn apply, wop_done_fn done)
{
    if (writer_submit(r->srv->writer, op, r, apply, done) < 0) {
        http_add_header(r, "Retry-After", "1");
        http_send_error(r, 503, "overloaded", NULL, "the write queue is full; retry shortly");
        return -1;
    }
    return 0;
}

void api_send_wop_error(struct http_req *r, const struct wop *op)
{
    struct err e;
    err_copy(&e, &op->err);
    http_send_err(r, &e);
}

int etag_list_match(const char *v, size_t l, const char *rev, bool weak_ok)
{
    size_t rl = rev ? strlen(rev) : 0;
    size_t i = 0;
    while (i < l) {
        while (i < l && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        if (i >= l) break;
        if (v[i] == '*') {
            if (rev) return 1;
            i++;
            continue;
        }
        bool weak = false;
        if (i + 1 < l && v[i] == 'W' && v[i + 1] == '/') { weak = true; i += 2; }
        const char *t;
        size_t tl;
        if (i < l && v[i] == '"') {
            t = v + ++i;
            while (i < l && v[i] != '"') i++;
            tl = (size_t)(v + i - t);
            i++;
        } else {                     /* a bare tag: taken as written */
            t = v + i;
            while (i < l && v[i] != ',' && v[i] != ' ') i++;
            tl = (size_t)(v + i - t);
        }
        if (rev && tl == rl && !memcmp(t, rev, rl) && (!weak || weak_ok)) return 1;
    }
    return 0;
}

bool api_etag_header(struct http_req *r, const char *name, char *out, size_t cap)
{
    size_t l;
    const char *v = http_header(r, name, &l);
    if (!v) return false;
    if (l >= 2 && v[0] == 'W' && v[1] == '/') { v += 2; l -= 2; }
    if (l >= 2 && v[0] == '"' && v[l - 1] == '"') { v++; l -= 2; }
    if (l >= cap) l = cap - 1;
    memcpy(out, v, l);
    out[l] = '\0';
    return true;
}
