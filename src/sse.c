/* sse.c - see sse.h.
 *
 * Three kinds of listeners, all on the loop thread:
 *   struct sub     GET /api/v1/events: topics and spaces filter, fed from
 *                  the ring of encoded frames (shared, refcounted);
 *   struct feed    GET /changes?feed=sse: one space's change log, re-read
 *                  from the database (a read job) whenever the space moves,
 *                  so a feed never misses a change however long it lagged;
 *   struct waiter  GET /changes?feed=longpoll: parked until the space moves
 *                  or its timeout fires.
 * One timer sends `: ping` to every stream each --sse-keepalive-ms.
 */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>

#include "api.h"
#include "api_util.h"
#include "auth.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "names.h"
#include "server.h"
#include "spaces.h"

#define SUB_MAX_SPACES 64

struct ring_ev {
    uint64_t id;
    uint8_t topic;
    char space[64];
    struct rbuf *frame;
};

struct sub {
    struct list link;
    struct http_req *r;
    uint8_t topics;
    bool all_spaces;
    int nspaces;
    char (*spaces)[64];              /* nspaces entries: most subscribers have one or none */
};

struct feed {
    struct list link;
    struct http_req *r;
    int64_t space_id;
    char space[64];
    uint64_t sent;                   /* last version written */
    bool reading;                    /* a read job is out */
    bool dirty;                      /* the space moved while reading */
    void *filter;                    /* struct changes_arg copy (owned) */
};

struct waiter {
    struct list link;
    struct http_req *r;
    int64_t space_id;
    char space[64];
    uint64_t since, limit;
    bool bodies;
    uv_timer_t timer;
    void *filter;
    bool done;
};

struct sse_hub {
    struct server *srv;
    struct list subs, feeds, waiters;
    uint64_t nsubs, nfeeds;
    struct ring_ev *ring;
    size_t ring_cap, ring_len, ring_head;    /* head: index of the oldest */
    uint64_t next_id;
    uv_timer_t ping;
    struct rbuf *ping_frame, *overflow_frame, *shutdown_frame;
    struct sse_stats stats;
};

static struct sse_hub *hub_of(struct server *srv) { return srv->sse; }

/* ---- ring ---------------------------------------------------------------- */

static void ring_push(struct sse_hub *h, uint64_t id, uint8_t topic, const char *space, struct rbuf *frame)
{
    if (!h->ring_cap) return;
    struct ring_ev *e;
    if (h->ring_len < h->ring_cap) {
        e = &h->ring[(h->ring_head + h->ring_len++) % h->ring_cap];
    } else {
        e = &h->ring[h->ring_head];
        rbuf_unref(e->frame);
        h->ring_head = (h->ring_head + 1) % h->ring_cap;
    }
    e->id = id;
    e->topic = topic;
    snprintf(e->space, sizeof e->space, "%s", space ? space : "");
    e->frame = rbuf_ref(frame);
}

static const char *topic_name(uint8_t t)
{
    return t == SSE_CHANGE ? "change" : t == SSE_SNAPSHOT ? "snapshot" : "sync";
}

/* ---- subscribers ------------------------------------------------------- */

static bool sub_wants(const struct sub *s, uint8_t topic, const char *space)
{
    if (!(s->topics & topic)) return false;
    if (s->all_spaces) return true;
    for (int i = 0; i < s->nspaces; i++)
        if (!strcmp(s->spaces[i], space)) return true;
    return false;
}

static void sub_unlink(struct sse_hub *h, struct sub *s)
{
    if (!list_linked(&s->link)) return;
    list_remove(&s->link);
    h->nsubs--;
}

static void sub_on_abort(struct http_req *r)
{
    struct sub *s = r->ctx;
    if (s) sub_unlink(hub_of(r->srv), s);
}

/* Writes a frame, or overflows the subscriber: returns false if dropped. */
static bool stream_send(struct sse_hub *h, struct http_req *r, struct rbuf *frame)
{
    if (!r->conn) return false;
    if (http_stream_queued(r) + http_chunk_payload_len(frame) > h->srv->cfg->sse_queue_bytes) {
        /* no more events for it: the overflow event goes after what is
         * queued, the stream ends, and the connection closes once that is
         * read -- or after the 2 s linger, whichever comes first, so the
         * memory held stays bounded by one small frame */
        h->stats.dropped++;
        if (r->on_abort) r->on_abort(r);
        r->on_abort = NULL;
        r->conn->close_after = 1;
        http_stream_write_chunk(r, h->overflow_frame);
        http_stream_end(r);
        return false;
    }
    http_stream_write_chunk(r, frame);
    return true;
}

/* Encodes an event as a shared, pre-framed chunk and keeps it in the ring. */
static struct rbuf *event_new(struct sse_hub *h, uint8_t topic, const char *space, const char *data, size_t len)
{
    uint64_t id = ++h->next_id;
    struct buf b;
    buf_init(&b);
    buf_reserve(&b, len + 64 + HTTP_CHUNK_HEAD);
    http_chunk_start(&b);
    buf_puts(&b, "id: ");
    buf_put_u64(&b, id);
    buf_puts(&b, "\nevent: ");
    buf_puts(&b, topic_name((uint8_t)topic));
    buf_puts(&b, "\ndata: ");
    buf_append(&b, data, len);
    buf_puts(&b, "\n\n");
    struct rbuf *frame = http_chunk_finish(&b);
    ring_push(h, id, topic, space, frame);
    h->stats.published++;
    return frame;
}


/* Sends a committed batch of events (already in the ring) to the
 * subscribers: one that wants every event of the batch gets them all in one
 * write of one chunk, built once and shared; one that wants some gets those
 * frame by frame. So a subscriber costs one send(2) per commit rather than
 * one per change (the cost of fan-out on loopback is almost all in the
 * kernel, per send). The shared chunk is not used past half the queue cap:
 * the cap applies to each event as it would one by one. */
static void publish_batch(struct sse_hub *h, uint8_t topic, const char **spaces, struct rbuf **frames, size_t n)
{
    struct rbuf *all = NULL;
    if (n > 1) {
        size_t total = 0;
        for (size_t i = 0; i < n; i++) total += http_chunk_payload_len(frames[i]);
        if (total <= h->srv->cfg->sse_queue_bytes / 2) {
            struct buf b;
            buf_init(&b);
            buf_reserve(&b, total + HTTP_CHUNK_HEAD + 2);
            http_chunk_start(&b);
            for (size_t i = 0; i < n; i++)
                buf_append(&b, frames[i]->data + HTTP_CHUNK_HEAD, http_chunk_payload_len(frames[i]));
            all = http_chunk_finish(&b);
        }
    }
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &h->subs) {
        struct sub *s = container_of(pos, struct sub, link);
        if (!(s->topics & topic)) continue;
        if (all) {
            size_t k = n;
            if (!s->all_spaces) {
                k = 0;
                for (size_t i = 0; i < n; i++) k += sub_wants(s, topic, spaces[i]);
            }
            if (k == n) {
                stream_send(h, s->r, all);
                continue;
            }
            if (k == 0) continue;
        }
        for (size_t i = 0; i < n; i++)
            if (sub_wants(s, topic, spaces[i]) && !stream_send(h, s->r, frames[i])) break;
    }
    rbuf_unref(all);
}

void sse_publish(struct server *srv, enum sse_topic topic, const char *space, const char *data, size_t len)
{
    struct sse_hub *h = hub_of(srv);
    if (!h) return;
    struct rbuf *frame = event_new(h, (uint8_t)topic, space, data, len);
    publish_batch(h, (uint8_t)topic, &space, &frame, 1);
    rbuf_unref(frame);
}

static void sub_free(void *p)
{
    struct sub *s = p;
    free(s->spaces);
    free(s);
}

static void sub_add_space(struct sub *s, const char *name)
{
    s->spaces = xrealloc(s->spaces, (size_t)(s->nspaces + 1) * sizeof *s->spaces);
    snprintf(s->spaces[s->nspaces++], 64, "%s", name);
}

void api_events(struct http_req *r)
{
    struct server *srv = r->srv;
    struct sse_hub *h = hub_of(srv);
    if (h->nsubs + h->nfeeds >= srv->cfg->sse_max_clients) {
        http_add_header(r, "Retry-After", "5");
        http_send_error(r, 503, "too_many_subscribers", NULL, "the server is at --sse-max-clients");
        return;
    }
    struct sub *s = xcalloc(1, sizeof *s);
    s->r = r;
    list_init(&s->link);
    char v[2048];
    long l = api_query(r, "topics", v, sizeof v);
    if (l == -2) {
        sub_free(s);
        return;
    }
    if (l > 0) {
        char *save = NULL;
        for (char *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (!strcmp(t, "change")) s->topics |= SSE_CHANGE;
            else if (!strcmp(t, "snapshot")) s->topics |= SSE_SNAPSHOT;
            else if (!strcmp(t, "sync")) s->topics |= SSE_SYNC;
            else {
                sub_free(s);
                http_send_error(r, 400, "invalid_parameter", NULL, "topics are change, snapshot and sync");
                return;
            }
        }
    } else {
        s->topics = SSE_CHANGE | SSE_SNAPSHOT | SSE_SYNC;
    }
    const struct key *k = r->key;
    l = api_query(r, "spaces", v, sizeof v);
    if (l == -2) {
        sub_free(s);
        return;
    }
    if (l > 0) {
        char *save = NULL;
        for (char *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (!name_space_valid(t, strlen(t))) {
                sub_free(s);
                http_send_error(r, 400, "invalid_name", NULL, "invalid space name in spaces");
                return;
            }
            if (k && !key_has_space(k, t)) {
                sub_free(s);
                http_send_error(r, 403, "forbidden", NULL, "this key may not use that space");
                return;
            }
            if (s->nspaces == SUB_MAX_SPACES) {
                sub_free(s);
                http_send_error(r, 400, "invalid_parameter", NULL, "at most %d spaces", SUB_MAX_SPACES);
                return;
            }
            sub_add_space(s, t);
        }
    } else if (!k || k->all_spaces || k->role == ROLE_ADMIN) {
        s->all_spaces = true;
    } else {
        for (int i = 0; i < k->nspaces && i < SUB_MAX_SPACES; i++) sub_add_space(s, k->spaces[i]);
    }

    /* replay point */
    uint64_t last = 0;
    bool has_last = false;
    size_t hl;
    const char *lei = http_header(r, "Last-Event-ID", &hl);
    if (!lei && (l = api_query(r, "last_event_id", v, sizeof v)) == -2) {
        sub_free(s);
        return;
    }
    if (!lei && l > 0) {
        lei = v;
        hl = (size_t)l;
    }
    if (lei && hl) {
        if (parse_u64(lei, hl, UINT64_MAX, &last) < 0) {
            sub_free(s);
            http_send_error(r, 400, "invalid_header", NULL, "Last-Event-ID must be an event id from this server");
            return;
        }
        has_last = true;
    }
    uint64_t oldest = h->ring_len ? h->ring[h->ring_head].id : h->next_id + 1;
    bool reset = has_last && (last + 1 < oldest || last > h->next_id);
    uint64_t from = reset ? oldest : has_last ? last + 1 : h->next_id + 1;
    http_add_header(r, "Cache-Control", "no-store");
    http_add_header(r, "X-Accel-Buffering", "no");
    http_add_header(r, "SSE-Replay-From", "%llu", (unsigned long long)from);
    if (r->head_only) {              /* the head, and no subscriber */
        sub_free(s);
        http_stream_begin(r, 200, "text/event-stream; charset=utf-8", true);
        http_stream_end(r);
        return;
    }
    r->ctx = s;
    r->ctx_free = sub_free;
    r->on_abort = sub_on_abort;
    http_stream_begin(r, 200, "text/event-stream; charset=utf-8", true);
    if (!r->conn) return;
    conn_set_timeout(r->conn, TO_NONE);         /* pings and TCP keepalive watch it */
    uv_tcp_keepalive(&r->conn->tcp, 1, 60);
    http_stream_write(r, "retry: 2000\n\n", 13);
    if (reset) {
        char f[160];
        int n = snprintf(f, sizeof f, "event: reset\ndata: {\"last_event_id\":%llu,\"oldest\":%llu}\n\n",
                         (unsigned long long)last, (unsigned long long)oldest);
        http_stream_write(r, f, (size_t)n);
    }
    list_insert_tail(&h->subs, &s->link);
    h->nsubs++;
    /* replay what the ring still has after the client's last event; after
     * a reset, all of it (SSE-Replay-From names the first id sent) */
    if (has_last) {
        for (size_t i = 0; i < h->ring_len; i++) {
            struct ring_ev *e = &h->ring[(h->ring_head + i) % h->ring_cap];
            if ((!reset && e->id <= last) || !sub_wants(s, e->topic, e->space)) continue;
            if (!stream_send(h, r, e->frame)) return;
        }
    }
}

/* ---- live change feeds --------------------------------------------------- */

static void feed_read(struct feed *f);

static void feed_unlink(struct sse_hub *h, struct feed *f)
{
    if (!list_linked(&f->link)) return;
    list_remove(&f->link);
    h->nfeeds--;
}

static void feed_free(void *p)
{
    struct feed *f = p;
    free(f->filter);
    free(f);
}

static void feed_on_abort(struct http_req *r)
{
    struct feed *f = r->ctx;
    if (f) feed_unlink(hub_of(r->srv), f);
}

static void feed_on_drain(struct http_req *r)
{
    struct feed *f = r->ctx;
    r->on_drain = NULL;
    if (f->dirty && !f->reading) feed_read(f);
}

static void feed_read_done(struct read_job *rj, struct http_req *r)
{
    struct feed *f = r->ctx;
    f->reading = false;
    if (rj->out.len) http_stream_write(r, rj->out.data, rj->out.len);
    if (rj->since > f->sent) f->sent = rj->since;
    if (!r->conn) return;
    if (r->srv->shutting_down) {
        http_stream_end(r);
        return;
    }
    if (rj->flag || f->dirty) {
        /* more to read: go on once the socket has taken most of it */
        f->dirty = true;
        if (http_stream_queued(r) > r->srv->cfg->sse_queue_bytes / 2) {
            r->on_drain = feed_on_drain;
            r->drain_low = r->srv->cfg->sse_queue_bytes / 4;
        } else {
            feed_read(f);
        }
    }
}

static void feed_read(struct feed *f)
{
    struct read_job *rj = read_job_new();
    rj->space_id = f->space_id;
    rj->since = f->sent;
    rj->limit = LIST_MAX;
    rj->flag = true;                 /* bodies */
    rj->until = changes_until(f->r->srv, f->space);
    rj->arg = changes_filter_copy(f->filter);
    f->reading = true;
    f->dirty = false;
    read_submit(f->r, rj, changes_sse_work, feed_read_done);
}

void feed_sse(struct http_req *r, int64_t space_id, uint64_t since, void *filter)
{
    struct server *srv = r->srv;
    struct sse_hub *h = hub_of(srv);
    if (h->nsubs + h->nfeeds >= srv->cfg->sse_max_clients) {
        free(filter);
        http_add_header(r, "Retry-After", "5");
        http_send_error(r, 503, "too_many_subscribers", NULL, "the server is at --sse-max-clients");
        return;
    }
    size_t hl;
    const char *lei = http_header(r, "Last-Event-ID", &hl);
    uint64_t v;
    if (lei && hl && parse_u64(lei, hl, INT64_MAX, &v) == 0) since = v;   /* versions: resume from the log */
    struct feed *f = xcalloc(1, sizeof *f);
    f->r = r;
    list_init(&f->link);
    f->space_id = space_id;
    snprintf(f->space, sizeof f->space, "%s", r->match.params.space);
    f->sent = since;
    f->filter = filter;
    r->ctx = f;
    r->ctx_free = feed_free;
    r->on_abort = feed_on_abort;
    http_add_header(r, "Cache-Control", "no-store");
    http_add_header(r, "X-Accel-Buffering", "no");
    http_stream_begin(r, 200, "text/event-stream; charset=utf-8", true);
    if (!r->conn) return;
    conn_set_timeout(r->conn, TO_NONE);
    uv_tcp_keepalive(&r->conn->tcp, 1, 60);
    http_stream_write(r, "retry: 2000\n\n", 13);
    list_insert_tail(&h->feeds, &f->link);
    h->nfeeds++;
    h->stats.feeds++;
    feed_read(f);
}

/* ---- long polling ----------------------------------------------------- */

static void waiter_closed(uv_handle_t *t)
{
    struct waiter *w = container_of((uv_timer_t *)t, struct waiter, timer);
    free(w->filter);
    free(w);
}

static void waiter_finish(struct sse_hub *h, struct waiter *w)
{
    if (w->done) return;
    w->done = true;
    if (list_linked(&w->link)) list_remove(&w->link);
    uv_timer_stop(&w->timer);
    struct http_req *r = w->r;
    r->on_abort = NULL;
    r->ctx = NULL;
    UNUSED(h);
    uv_close((uv_handle_t *)&w->timer, waiter_closed);
    http_req_unref(r);
}

static void waiter_on_abort(struct http_req *r)
{
    struct waiter *w = r->ctx;
    if (w) waiter_finish(hub_of(r->srv), w);
}

/* The space moved (or time is up): read and answer. */
static void waiter_answer(struct sse_hub *h, struct waiter *w, bool timed_out)
{
    struct http_req *r = w->r;
    http_req_ref(r);
    void *filter = w->filter;
    w->filter = NULL;
    int64_t sid = w->space_id;
    uint64_t since = w->since, limit = w->limit, until = changes_until(r->srv, w->space);
    bool bodies = w->bodies;
    waiter_finish(h, w);
    if (r->conn) {
        if (timed_out) {
            struct buf b;
            buf_init(&b);
            buf_puts(&b, "{\"changes\":[],\"last_version\":");
            buf_put_u64(&b, since);
            buf_puts(&b, ",\"more\":false}");
            http_send_json(r, 200, &b);
            free(filter);
        } else {
            changes_respond(r, sid, since, until, limit, bodies, filter);
        }
    } else {
        free(filter);
    }
    http_req_unref(r);
}

static void waiter_timeout(uv_timer_t *t)
{
    struct waiter *w = container_of(t, struct waiter, timer);
    waiter_answer(hub_of(w->r->srv), w, true);
}

void feed_longpoll(struct http_req *r, int64_t space_id, uint64_t since, uint64_t limit, bool bodies,
                   uint64_t timeout_ms, void *filter)
{
    struct sse_hub *h = hub_of(r->srv);
    struct space *sp = spaces_get(r->srv, r->match.params.space);
    if (!sp || sp->st.version > since) {
        changes_respond(r, space_id, since, sp ? sp->st.version : UINT64_MAX, limit, bodies,
                        filter);   /* something is there already */
        return;
    }
    struct waiter *w = xcalloc(1, sizeof *w);
    w->r = r;
    http_req_ref(r);
    w->space_id = space_id;
    snprintf(w->space, sizeof w->space, "%s", sp->st.name);
    w->since = since;
    w->limit = limit;
    w->bodies = bodies;
    w->filter = filter;
    uv_timer_init(r->srv->loop, &w->timer);
    uv_timer_start(&w->timer, waiter_timeout, timeout_ms, 0);
    r->ctx = w;
    r->on_abort = waiter_on_abort;
    list_insert_tail(&h->waiters, &w->link);
    h->stats.longpolls++;
}

/* ---- committed changes ------------------------------------------------- */

void sse_changes_committed(struct server *srv, const struct change_rec *c, size_t n)
{
    struct sse_hub *h = hub_of(srv);
    if (!h) return;
    struct buf b;
    buf_init(&b);
    struct rbuf *stack_frames[64], **frames = n <= 64 ? stack_frames : xmalloc(n * sizeof *frames);
    const char *stack_spaces[64], **sp_names = n <= 64 ? stack_spaces : xmalloc(n * sizeof *sp_names);
    for (size_t i = 0; i < n; i++) {
        buf_reset(&b);
        buf_puts(&b, "{\"space\":");
        json_cstr(&b, c[i].space);
        json_kv_str(&b, "collection", c[i].collection);
        json_kv_str(&b, "id", c[i].id);
        json_kv_str(&b, "rev", c[i].rev);
        json_kv_u64(&b, "version", c[i].version);
        json_kv_bool(&b, "deleted", c[i].deleted);
        buf_putc(&b, '}');
        frames[i] = event_new(h, SSE_CHANGE, c[i].space, b.data, b.len);
        sp_names[i] = c[i].space;
        struct space *sp = spaces_get(srv, c[i].space);
        if (sp) sp->changes_seen++;
    }
    buf_free(&b);
    publish_batch(h, SSE_CHANGE, sp_names, frames, n);
    for (size_t i = 0; i < n; i++) rbuf_unref(frames[i]);
    if (frames != stack_frames) free(frames);
    if (sp_names != stack_spaces) free(sp_names);
    /* wake the live feeds and long polls of the spaces that moved */
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &h->waiters) {
        struct waiter *w = container_of(pos, struct waiter, link);
        for (size_t i = 0; i < n; i++)
            if (!strcmp(c[i].space, w->space) && c[i].version > w->since) {
                waiter_answer(h, w, false);
                break;
            }
    }
    list_foreach_safe(pos, tmp, &h->feeds) {
        struct feed *f = container_of(pos, struct feed, link);
        for (size_t i = 0; i < n; i++)
            if (!strcmp(c[i].space, f->space) && c[i].version > f->sent) {
                f->dirty = true;
                if (!f->reading && !f->r->on_drain) feed_read(f);
                break;
            }
    }
}

/* ---- keepalive, shutdown ------------------------------------------------ */

static void on_ping(uv_timer_t *t)
{
    struct sse_hub *h = container_of(t, struct sse_hub, ping);
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &h->subs) stream_send(h, container_of(pos, struct sub, link)->r, h->ping_frame);
    list_foreach_safe(pos, tmp, &h->feeds) {
        struct feed *f = container_of(pos, struct feed, link);
        if (f->r->conn) http_stream_write_chunk(f->r, h->ping_frame);
    }
}

static void on_shutdown(struct server *srv, void *arg)
{
    struct sse_hub *h = arg;
    struct list *pos, *tmp;
    uv_timer_stop(&h->ping);
    list_foreach_safe(pos, tmp, &h->subs) {
        struct sub *s = container_of(pos, struct sub, link);
        struct http_req *r = s->r;
        sub_unlink(h, s);
        r->on_abort = NULL;
        if (r->conn) {
            http_stream_write_chunk(r, h->shutdown_frame);
            http_stream_end(r);
        }
    }
    list_foreach_safe(pos, tmp, &h->feeds) {
        struct feed *f = container_of(pos, struct feed, link);
        struct http_req *r = f->r;
        feed_unlink(h, f);
        r->on_abort = NULL;
        if (r->conn) {
            http_stream_write_chunk(r, h->shutdown_frame);
            if (!f->reading) http_stream_end(r);   /* else feed_read_done ends it */
        }
    }
    list_foreach_safe(pos, tmp, &h->waiters) waiter_answer(h, container_of(pos, struct waiter, link), true);
    UNUSED(srv);
}

void sse_init(struct server *srv)
{
    struct sse_hub *h = xcalloc(1, sizeof *h);
    h->srv = srv;
    list_init(&h->subs);
    list_init(&h->feeds);
    list_init(&h->waiters);
    h->ring_cap = srv->cfg->sse_replay_events;
    h->ring = h->ring_cap ? xcalloc(h->ring_cap, sizeof *h->ring) : NULL;
    /* ids keep growing across restarts: start from the clock */
    h->next_id = now_ms_wall() * 1000;
    h->ping_frame = http_chunk_new(": ping\n\n", 8);
    static const char of[] = "event: overflow\ndata: {\"reason\":\"the client did not keep up\"}\n\n";
    h->overflow_frame = http_chunk_new(of, sizeof of - 1);
    static const char sd[] = "event: shutdown\ndata: {}\n\n";
    h->shutdown_frame = http_chunk_new(sd, sizeof sd - 1);
    uv_timer_init(srv->loop, &h->ping);
    uv_timer_start(&h->ping, on_ping, srv->cfg->sse_keepalive_ms, srv->cfg->sse_keepalive_ms);
    uv_unref((uv_handle_t *)&h->ping);
    srv->sse = h;
    server_add_shutdown_hook(srv, on_shutdown, h);
}

static void hub_closed(uv_handle_t *t)
{
    struct sse_hub *h = container_of((uv_timer_t *)t, struct sse_hub, ping);
    free(h);
}

void sse_free(struct server *srv)
{
    struct sse_hub *h = srv->sse;
    if (!h) return;
    for (size_t i = 0; i < h->ring_len; i++) rbuf_unref(h->ring[(h->ring_head + i) % h->ring_cap].frame);
    free(h->ring);
    rbuf_unref(h->ping_frame);
    rbuf_unref(h->overflow_frame);
    rbuf_unref(h->shutdown_frame);
    srv->sse = NULL;
    uv_close((uv_handle_t *)&h->ping, hub_closed);
}

void sse_get_stats(struct server *srv, struct sse_stats *out)
{
    struct sse_hub *h = srv->sse;
    *out = h->stats;
    out->subscribers = h->nsubs + h->nfeeds;
}
