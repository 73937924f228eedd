/* feeds.c - GET /api/v1/events and GET /changes?feed=sse: each request's
 * parameters and checks (capacity, topics, spaces the key may use, where
 * to resume). The streams they open are the SSE hub's (svc/sse.c). Loop
 * thread. */
#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/util.h"
#include "core/names.h"
#include "net/http.h"
#include "net/server.h"
#include "svc/auth.h"
#include "svc/sse.h"

static void too_many(struct http_req *r)
{
    http_add_header(r, "Retry-After", "5");
    http_send_error(r, 503, "too_many_subscribers", NULL, "the server is at --sse-max-clients");
}

/* ?topics=change,snapshot,sync (all when absent). 0, or -1 after answering. */
static int events_topics(struct http_req *r, struct sse_filter *f)
{
    char v[2048];
    long l = api_query(r, "topics", v, sizeof v);
    if (l == -2) return -1;
    if (l <= 0) {
        f->topics = SSE_CHANGE | SSE_SNAPSHOT | SSE_SYNC;
        return 0;
    }
    char *save = NULL;
    for (char *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "change")) f->topics |= SSE_CHANGE;
        else if (!strcmp(t, "snapshot")) f->topics |= SSE_SNAPSHOT;
        else if (!strcmp(t, "sync")) f->topics |= SSE_SYNC;
        else {
            http_send_error(r, 400, "invalid_parameter", NULL, "topics are change, snapshot and sync");
            return -1;
        }
    }
    return 0;
}

/* ?spaces=a,b (each one the key may use); when absent, every space the key
 * may use. 0, or -1 after answering. */
static int events_spaces(struct http_req *r, struct sse_filter *f)
{
    const struct key *k = auth_key(r);
    char v[2048];
    long l = api_query(r, "spaces", v, sizeof v);
    if (l == -2) return -1;
    if (l > 0) {
        char *save = NULL;
        for (char *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (!name_space_valid(t, strlen(t))) {
                http_send_error(r, 400, "invalid_name", NULL, "invalid space name in spaces");
                return -1;
            }
            if (k && !key_has_space(k, t)) {
                http_send_error(r, 403, "forbidden", NULL, "this key may not use that space");
                return -1;
            }
            if (f->nspaces == SSE_MAX_SPACES) {
                http_send_error(r, 400, "invalid_parameter", NULL, "at most %d spaces", SSE_MAX_SPACES);
                return -1;
            }
            sse_filter_add_space(f, t);
        }
    } else if (!k || k->all_spaces || k->role == ROLE_ADMIN) {
        f->all_spaces = true;
    } else {
        for (int i = 0; i < k->nspaces && i < SSE_MAX_SPACES; i++) sse_filter_add_space(f, k->spaces[i]);
    }
    return 0;
}

/* The replay point: the Last-Event-ID header, else ?last_event_id=. 0, or
 * -1 after answering. */
static int events_last_id(struct http_req *r, bool *has_last, uint64_t *last)
{
    char v[2048];
    long l = -1;
    size_t hl;
    const char *lei = http_header(r, "Last-Event-ID", &hl);
    if (!lei && (l = api_query(r, "last_event_id", v, sizeof v)) == -2) return -1;
    if (!lei && l > 0) {
        lei = v;
        hl = (size_t)l;
    }
    *has_last = false;
    *last = 0;
    if (lei && hl) {
        if (parse_u64(lei, hl, UINT64_MAX, last) < 0) {
            http_send_error(r, 400, "invalid_header", NULL, "Last-Event-ID must be an event id from this server");
            return -1;
        }
        *has_last = true;
    }
    return 0;
}

void api_events(struct http_req *r)
{
    if (!sse_has_room(r->srv)) {
        too_many(r);
        return;
    }
    struct sse_filter f;
    memset(&f, 0, sizeof f);
    bool has_last;
    uint64_t last;
    if (events_topics(r, &f) < 0 || events_spaces(r, &f) < 0 || events_last_id(r, &has_last, &last) < 0) {
        sse_filter_free(&f);
        return;
    }
    sse_subscribe(r, &f, has_last, last);
}

void feed_sse(struct http_req *r, int64_t space_id, uint64_t since, void *filter)
{
    if (!sse_has_room(r->srv)) {
        free(filter);
        too_many(r);
        return;
    }
    size_t hl;
    const char *lei = http_header(r, "Last-Event-ID", &hl);
    uint64_t v;
    if (lei && hl && parse_u64(lei, hl, INT64_MAX, &v) == 0) since = v;   /* versions: resume from the log */
    sse_feed_open(r, space_id, r->match.params.space, since, filter);
}
