/* sse.c - see sse.h.
 *
 * Three kinds of listeners, all on the loop thread:
 *   struct sub     GET /api/v1/events: topics and spaces filter, fed from
 *                  batches of encoded frames (shared, refcounted);
 *   struct feed    GET /changes?feed=sse: one space's change log, re-read
 *                  from the database (a read job) whenever the space moves,
 *                  so a feed never misses a change however long it lagged;
 *   struct waiter  GET /changes?feed=longpoll: parked until the space moves
 *                  or its timeout fires.
 * One timer sends `: ping` to every stream each --sse-keepalive-ms.
 *
 * Fan-out. A commit's events become one batch (struct batch: the frames,
 * and, when small enough, the same bytes as one chunk) appended to a FIFO.
 * A round walks the subscribers in list order and offers each the batches
 * newer than the last event it was given (sub->last_id), all in one write.
 * The walk gives the loop back every FANOUT_SLICE_NS (an idle handle takes
 * it up on the next iteration), so a commit to 10,000 subscribers never
 * stalls the loop; a batch that comes while a round runs reaches the
 * subscribers ahead of the cursor in this round and the others in the next,
 * so no subscriber sees events out of order. A round frees the batches
 * that existed when it began.
 *
 * Per subscriber output. At most one write request is in flight; what comes
 * meanwhile waits in sub->q (frame references) and goes out as one write
 * (sendmsg with many iovecs, or one uv_write with many bufs) when it is
 * done. Everything a subscriber holds is counted in sub->pinned: each
 * frame's bytes plus SSE_EVENT_OVERHEAD for its queue slot, the write
 * request's reference and libuv's copy of its iovec, whether or not the
 * frame is shared. Past --sse-queue-bytes it gets `event: overflow` and is
 * closed (sub_overflow).
 */
#include "svc/sse.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/json.h"
#include "core/log.h"
#include "net/http.h"
#include "net/server.h"
#include "store/spaces.h"
#include "svc/changes.h"

#define FANOUT_SLICE_NS (4 * 1000 * 1000)   /* a fan-out turn gives the loop back after 4 ms */
#define VISIT_BYTES (256 * 1024)            /* sent at once to one subscriber per visit, about */
#define SUB_Q_KEEP 256                      /* queue slots kept after a flush; more are freed */

struct ring_ev {
    uint64_t id;
    uint8_t topic;
    char space[64];
    struct rbuf *frame;
};

struct sub {
    struct list link;
    struct http_req *r;
    struct sse_filter f;             /* topics and spaces it takes */
    uint64_t last_id;                /* the newest event it was offered (or the newest when it came) */
    uint64_t ping_gen;               /* the last ping round it took part in */
    struct rbuf **q;                 /* frames waiting for the write in flight (references) */
    uint32_t qlen, qcap;
    size_t pinned;                   /* bytes held for it: q and the write in flight */
    size_t inflight;                 /* the part of pinned in the write in flight */
};

/* One commit's events (or one published event), in id order. */
struct batch {
    struct batch *next;
    uint8_t topic;
    uint64_t first_id, last_id;
    size_t n;
    struct rbuf *all;                /* the n frames as one chunk, or NULL */
    struct rbuf **frames;            /* n references */
    const char **spaces;             /* n names, into the allocation */
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
    uint64_t next_id;                        /* the last id given out */
    /* fan-out */
    struct batch *pend, **pend_tail;         /* batches not yet offered to every subscriber */
    struct list *cursor;                     /* the next subscriber of the round; NULL: no round */
    uint64_t round_id, round_ping;           /* next_id and ping_gen when the round began */
    uint64_t ping_gen;
    uv_idle_t turn;                          /* runs the rest of a round on the next iteration */
    struct rbuf **scratch;                   /* one subscriber's frames of a visit (borrowed) */
    size_t scratch_cap;
    size_t queued;                           /* sum of the subscribers' pinned bytes */
    int handles;                             /* open uv handles: free the hub when 0 */
    uv_timer_t ping;
    struct rbuf *ping_frame, *retry_frame, *overflow_frame, *shutdown_frame;
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

/* forgets every event it holds */
static void ring_clear(struct sse_hub *h)
{
    for (size_t i = 0; i < h->ring_len; i++) rbuf_unref(h->ring[(h->ring_head + i) % h->ring_cap].frame);
    h->ring_len = h->ring_head = 0;
}

static const char *topic_name(uint8_t t)
{
    return t == SSE_CHANGE ? "change" : t == SSE_SNAPSHOT ? "snapshot" : "sync";
}

/* ---- subscribers: output ------------------------------------------------- */

/* What a frame costs the subscriber it is queued for. */
static inline size_t cost(const struct rbuf *f) { return f->len + SSE_EVENT_OVERHEAD; }

size_t sse_frames_fit(struct rbuf *const *fr, size_t n, size_t held, size_t cap, size_t *bytes)
{
    size_t m = 0, c = held;
    while (m < n && c + cost(fr[m]) <= cap) c += cost(fr[m++]);
    if (bytes) *bytes = c - held;
    return m;
}

bool sse_filter_wants(const struct sse_filter *f, uint8_t topic, const char *space)
{
    if (!(f->topics & topic)) return false;
    if (f->all_spaces) return true;
    for (int i = 0; i < f->nspaces; i++)
        if (!strcmp(f->spaces[i], space)) return true;
    return false;
}

void sse_filter_add_space(struct sse_filter *f, const char *name)
{
    assert(f->nspaces < SSE_MAX_SPACES);
    f->spaces = xrealloc(f->spaces, (size_t)(f->nspaces + 1) * sizeof *f->spaces);
    snprintf(f->spaces[f->nspaces++], 64, "%s", name);
}

void sse_filter_free(struct sse_filter *f)
{
    free(f->spaces);
    f->spaces = NULL;
    f->nspaces = 0;
}

static bool sub_wants(const struct sub *s, uint8_t topic, const char *space)
{
    return sse_filter_wants(&s->f, topic, space);
}

static void sub_unlink(struct sse_hub *h, struct sub *s)
{
    if (!h || !list_linked(&s->link)) return;
    if (h->cursor == &s->link) h->cursor = s->link.next;
    list_remove(&s->link);
    h->nsubs--;
}

static void sub_on_abort(struct http_req *r)
{
    struct sub *s = r->ctx;
    if (s) sub_unlink(hub_of(r->srv), s);
}

/* Drops the frames waiting in the queue (the write in flight stays). */
static void sub_drop_queue(struct sse_hub *h, struct sub *s)
{
    for (uint32_t i = 0; i < s->qlen; i++) rbuf_unref(s->q[i]);
    s->qlen = 0;
    if (h) h->queued -= s->pinned - s->inflight;
    s->pinned = s->inflight;
}

static void sub_free(void *p)
{
    struct sub *s = p;
    struct sse_hub *h = hub_of(s->r->srv);
    sub_drop_queue(h, s);
    if (h) h->queued -= s->pinned;
    free(s->q);
    sse_filter_free(&s->f);
    free(s);
}

static bool sub_busy(const struct sub *s)
{
    return s->inflight || s->qlen || http_stream_queued(s->r);
}

/* Cuts a subscriber off: its queue is dropped, `event: overflow` goes
 * after the write in flight, and the stream ends; the connection closes
 * once that is sent, or after --idle-timeout-ms without progress. The
 * request is finished: s is freed (the request's context) before this
 * returns, unless something else holds the request. */
static void sub_overflow(struct sse_hub *h, struct sub *s)
{
    struct http_req *r = s->r;
    h->stats.dropped++;
    sub_unlink(h, s);
    sub_drop_queue(h, s);
    r->on_abort = NULL;
    r->on_drain = NULL;
    if (r->conn) {
        r->conn->close_after = 1;
        http_stream_write_chunk(r, h->overflow_frame);
    }
    http_stream_end(r);
}

/* Sends frames (borrowed) to a subscriber, in order: at once as far as the
 * socket takes them when nothing is in flight, the rest as one write; or
 * into its queue behind the write in flight. Returns false if that would
 * pass --sse-queue-bytes: the subscriber was cut off and s is gone. */
static bool sub_send(struct sse_hub *h, struct sub *s, struct rbuf *const *fr, size_t n)
{
    struct http_req *r = s->r;
    size_t cap = h->srv->cfg->sse_queue_bytes;
    if (!r->conn || !n) return true;             /* gone: on_abort unlinks it */
    if (!sub_busy(s)) {
        size_t off, k = http_stream_try_chunks(r, fr, n, &off);
        fr += k;
        n -= k;
        if (!n) return true;
        /* the rest in one write; a frame already partly sent must be finished */
        size_t m, c;
        if (off) {
            m = 1 + sse_frames_fit(fr + 1, n - 1, cost(fr[0]), cap, &c);
            c += cost(fr[0]);
        } else {
            m = sse_frames_fit(fr, n, 0, cap, &c);
        }
        if (m) {
            http_stream_queue_chunks(r, fr, m, off);
            s->inflight = s->pinned = c;
            h->queued += c;
        }
        if (m == n) return true;
        sub_overflow(h, s);
        return false;
    }
    if (s->qcap - s->qlen < n) {
        /* room for n, doubling, but never more slots than the cap can
         * fill: each event costs more than SSE_EVENT_OVERHEAD */
        size_t want = MIN(MAX((size_t)s->qlen + n, 2 * (size_t)s->qcap), cap / SSE_EVENT_OVERHEAD + 1);
        if (want > s->qcap) {
            s->q = xrealloc(s->q, want * sizeof *s->q);
            s->qcap = (uint32_t)want;
        }
    }
    size_t m = sse_frames_fit(fr, n, s->pinned, cap, NULL);
    for (size_t i = 0; i < m; i++) {
        size_t c = cost(fr[i]);
        assert(s->qlen < s->qcap);
        s->q[s->qlen++] = rbuf_ref(fr[i]);
        s->pinned += c;
        h->queued += c;
    }
    if (m == n) return true;
    sub_overflow(h, s);             /* the next one would pass the cap */
    return false;
}

/* The write in flight is done (the connection's write queue is empty):
 * what waited in the queue goes out, as one write. */
static void sub_on_drain(struct http_req *r)
{
    struct sub *s = r->ctx;
    struct sse_hub *h = hub_of(r->srv);
    h->queued -= s->inflight;
    s->pinned -= s->inflight;
    s->inflight = 0;
    if (!s->qlen) return;
    size_t n = s->qlen, off, k = http_stream_try_chunks(r, s->q, n, &off);
    if (k < n) {
        http_stream_queue_chunks(r, s->q + k, n - k, off);
        for (size_t i = k; i < n; i++) s->inflight += cost(s->q[i]);
    }
    for (size_t i = 0; i < n; i++) rbuf_unref(s->q[i]);
    s->qlen = 0;
    h->queued -= s->pinned - s->inflight;
    s->pinned = s->inflight;
    if (s->qcap > SUB_Q_KEEP) {
        free(s->q);
        s->q = NULL;
        s->qcap = 0;
    }
}

/* ---- fan-out --------------------------------------------------------------- */

static void scratch_reserve(struct sse_hub *h, size_t n)
{
    if (n <= h->scratch_cap) return;
    h->scratch_cap = MAX(n, 2 * h->scratch_cap);
    h->scratch = xrealloc(h->scratch, h->scratch_cap * sizeof *h->scratch);
}

static bool sub_wants_all(const struct sub *s, const struct batch *b)
{
    if (s->f.all_spaces) return true;
    for (size_t i = 0; i < b->n; i++)
        if (!sub_wants(s, b->topic, b->spaces[i])) return false;
    return true;
}

enum visit { VISIT_DONE, VISIT_MORE, VISIT_GONE };

/* Offers a subscriber, in one write, the pending events newer than the
 * last it was offered that it wants (a ping instead when a ping round is
 * on and it has nothing to send). One that has nothing in flight gets at
 * most about VISIT_BYTES per visit: the socket may take megabytes, and
 * copying them into the kernel is most of a visit's time; VISIT_MORE then
 * asks for another visit. VISIT_GONE: it was cut off and s is freed. */
static enum visit sub_visit(struct sse_hub *h, struct sub *s)
{
    size_t cap = h->srv->cfg->sse_queue_bytes;
    bool busy = sub_busy(s), more = false;
    size_t n = 0, c = s->pinned;     /* c: what it would hold if the socket took nothing more */
    for (struct batch *b = h->pend; b; b = b->next) {
        if (b->last_id <= s->last_id) continue;
        if (!busy && c - s->pinned >= VISIT_BYTES) {
            more = true;
            break;
        }
        s->last_id = b->last_id;
        if (!(s->f.topics & b->topic)) continue;
        if (b->all && (!busy || c + cost(b->all) <= cap) && sub_wants_all(s, b)) {
            scratch_reserve(h, n + 1);
            h->scratch[n++] = b->all;
            c += cost(b->all);
            continue;
        }
        scratch_reserve(h, n + b->n);
        for (size_t i = 0; i < b->n; i++) {
            if (!s->f.all_spaces && !sub_wants(s, b->topic, b->spaces[i])) continue;
            h->scratch[n++] = b->frames[i];
            c += cost(b->frames[i]);
            if (busy && c > cap) {                   /* it overflows here */
                sub_send(h, s, h->scratch, n);
                return VISIT_GONE;
            }
        }
    }
    bool ping = s->ping_gen != h->ping_gen;
    s->ping_gen = h->ping_gen;
    if (n) return !sub_send(h, s, h->scratch, n) ? VISIT_GONE : more ? VISIT_MORE : VISIT_DONE;
    if (ping && !busy && !sub_send(h, s, &h->ping_frame, 1)) return VISIT_GONE;   /* a busy one has bytes on the way */
    return VISIT_DONE;
}

static void batch_free(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) rbuf_unref(b->frames[i]);
    rbuf_unref(b->all);
    free(b);
}

static void round_begin(struct sse_hub *h)
{
    h->cursor = h->subs.next;
    h->round_id = h->next_id;
    h->round_ping = h->ping_gen;
}

static void fanout_turn(uv_idle_t *t);

/* Goes on with the round from the cursor; gives the loop back after
 * FANOUT_SLICE_NS (the idle handle calls again), else ends the round, frees
 * the batches every subscriber has been offered, and starts another round
 * if something came meanwhile. */
static void fanout_run(struct sse_hub *h)
{
    uint64_t t0 = uv_hrtime();
    for (;;) {
        while (h->cursor != &h->subs) {
            /* the cursor stays on s during the visit: if s is cut off,
             * sub_unlink moves it on */
            struct sub *s = container_of(h->cursor, struct sub, link);
            enum visit v = sub_visit(h, s);
            if (v == VISIT_DONE) h->cursor = s->link.next;
            if (uv_hrtime() - t0 > FANOUT_SLICE_NS) {
                uv_idle_start(&h->turn, fanout_turn);
                return;
            }
        }
        while (h->pend && h->pend->last_id <= h->round_id) {
            struct batch *b = h->pend;
            h->pend = b->next;
            batch_free(b);
        }
        if (!h->pend) h->pend_tail = &h->pend;
        if (!h->pend && h->ping_gen == h->round_ping) break;
        round_begin(h);
    }
    h->cursor = NULL;
    uv_idle_stop(&h->turn);
}

static void fanout_turn(uv_idle_t *t)
{
    struct sse_hub *h = container_of(t, struct sse_hub, turn);
    if (h->cursor) fanout_run(h);
    else uv_idle_stop(t);
}

/* Something to offer: start a round unless one is running (it, or the
 * next one, picks the new batch up). */
static void fanout_kick(struct sse_hub *h)
{
    if (h->cursor) return;
    round_begin(h);
    fanout_run(h);
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

/* Queues the n events just made (the last n ids; frames: references, taken
 * over) for the subscribers and starts offering them. When the batch fits
 * in the queue cap, its frames are also joined into one chunk, built once
 * and shared: a subscriber that wants all of it then costs one buffer and
 * one send(2) per commit, not one per change (the cost of fan-out on
 * loopback is almost all in the kernel, per send), and one queue slot. A
 * subscriber with a write in flight takes the chunk only if it still fits
 * under its cap, else the frames one by one, so it gets as many events as
 * fit before an overflow. */
static void publish_batch(struct sse_hub *h, uint8_t topic, const char *const *spaces, struct rbuf **frames, size_t n)
{
    size_t names = 0;
    for (size_t i = 0; i < n; i++) names += strlen(spaces[i] ? spaces[i] : "") + 1;
    struct batch *b = xmalloc(sizeof *b + n * (sizeof *b->frames + sizeof *b->spaces) + names);
    b->next = NULL;
    b->topic = topic;
    b->n = n;
    b->last_id = h->next_id;
    b->first_id = h->next_id - n + 1;
    b->frames = (struct rbuf **)(b + 1);
    b->spaces = (const char **)(b->frames + n);
    char *p = (char *)(b->spaces + n);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(spaces[i] ? spaces[i] : "") + 1;
        memcpy(p, spaces[i] ? spaces[i] : "", l);
        b->spaces[i] = p;
        p += l;
        b->frames[i] = frames[i];
        total += http_chunk_payload_len(frames[i]);
    }
    b->all = NULL;
    if (n > 1 && total + HTTP_CHUNK_HEAD + 2 + SSE_EVENT_OVERHEAD <= h->srv->cfg->sse_queue_bytes) {
        struct buf all;
        buf_init(&all);
        buf_reserve(&all, total + HTTP_CHUNK_HEAD + 2);
        http_chunk_start(&all);
        for (size_t i = 0; i < n; i++)
            buf_append(&all, frames[i]->data + HTTP_CHUNK_HEAD, http_chunk_payload_len(frames[i]));
        b->all = http_chunk_finish(&all);
    }
    *h->pend_tail = b;
    h->pend_tail = &b->next;
    fanout_kick(h);
}

void sse_publish(struct server *srv, enum sse_topic topic, const char *space, const char *data, size_t len)
{
    struct sse_hub *h = hub_of(srv);
    if (!h) return;
    struct rbuf *frame = event_new(h, (uint8_t)topic, space, data, len);
    publish_batch(h, (uint8_t)topic, &space, &frame, 1);
}

/* ---- subscribers: GET /api/v1/events ------------------------------------- */

bool sse_has_room(struct server *srv)
{
    struct sse_hub *h = hub_of(srv);
    return h->nsubs + h->nfeeds < srv->cfg->sse_max_clients;
}

size_t sse_ring_len(const struct sse_hub *h) { return h->ring_len; }

void sse_resume_point(const struct sse_hub *h, bool has_last, uint64_t last, struct sse_resume *rp)
{
    rp->has_last = has_last;
    rp->last = last;
    rp->oldest = h->ring_len ? h->ring[h->ring_head].id : h->next_id + 1;
    rp->reset = has_last && (last + 1 < rp->oldest || last > h->next_id);
    rp->from = rp->reset ? rp->oldest : has_last ? last + 1 : h->next_id + 1;
}

/* Replays what the ring still has after the client's last event; after a
 * reset, all of it (SSE-Replay-From names the first id sent). */
size_t sse_replay(const struct sse_hub *h, const struct sse_filter *f, const struct sse_resume *rp, struct rbuf **out)
{
    size_t n = 0;
    if (!rp->has_last) return 0;
    for (size_t i = 0; i < h->ring_len; i++) {
        const struct ring_ev *e = &h->ring[(h->ring_head + i) % h->ring_cap];
        if ((!rp->reset && e->id <= rp->last) || !sse_filter_wants(f, e->topic, e->space)) continue;
        out[n++] = e->frame;
    }
    return n;
}

void sse_subscribe(struct http_req *r, struct sse_filter *f, bool has_last, uint64_t last)
{
    struct sse_hub *h = hub_of(r->srv);
    struct sub *s = xcalloc(1, sizeof *s);
    s->r = r;
    list_init(&s->link);
    s->f = *f;                       /* the space list is s's now */
    memset(f, 0, sizeof *f);
    struct sse_resume rp;
    sse_resume_point(h, has_last, last, &rp);
    http_add_header(r, "Cache-Control", "no-store");
    http_add_header(r, "X-Accel-Buffering", "no");
    http_add_header(r, "SSE-Replay-From", "%llu", (unsigned long long)rp.from);
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
    r->on_drain = sub_on_drain;      /* the write in flight is done: send the queue */
    r->drain_low = 0;
    s->last_id = h->next_id;         /* live events from the next one on */
    s->ping_gen = h->ping_gen;
    list_insert_tail(&h->subs, &s->link);
    h->nsubs++;
    /* everything goes through sub_send, so it counts against the cap */
    scratch_reserve(h, h->ring_len + 2);
    size_t n = 0;
    h->scratch[n++] = h->retry_frame;
    struct rbuf *reset_frame = NULL;
    if (rp.reset) {
        char fr[160];
        int fl = snprintf(fr, sizeof fr, "event: reset\ndata: {\"last_event_id\":%llu,\"oldest\":%llu}\n\n",
                          (unsigned long long)last, (unsigned long long)rp.oldest);
        h->scratch[n++] = reset_frame = http_chunk_new(fr, (size_t)fl);
    }
    /* Events of a batch still being offered are in the ring already:
     * last_id keeps the round from sending them again. */
    n += sse_replay(h, &s->f, &rp, h->scratch + n);
    sub_send(h, s, h->scratch, n);
    rbuf_unref(reset_frame);
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
    rj->limit = CHANGES_PAGE_MAX;
    rj->flag = true;                 /* bodies */
    rj->until = changes_until(f->r->srv, f->space);
    rj->arg = changes_filter_copy(f->filter);
    f->reading = true;
    f->dirty = false;
    read_start(f->r->srv->store, f->r, rj, changes_sse_work, feed_read_done);
}

void sse_feed_open(struct http_req *r, int64_t space_id, const char *space, uint64_t since, void *filter)
{
    struct sse_hub *h = hub_of(r->srv);
    struct feed *f = xcalloc(1, sizeof *f);
    f->r = r;
    list_init(&f->link);
    f->space_id = space_id;
    snprintf(f->space, sizeof f->space, "%s", space);
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
    struct space *sp = spaces_get(r->srv->spaces, r->match.params.space);
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

/* A commit left `skipped` changes of space out of its list (more than
 * WRITER_CHANGES_MAX: a restore of a large space): their ids are used up,
 * the ring forgets what it holds (a Last-Event-ID from before the gap gets
 * `event: reset`, as for any id older than the ring), and the subscribers
 * of the space's changes get a `reset` now, with no id: what came before
 * is not all there, read the state again. The same a subscriber would
 * get by reconnecting, without a million frames built on the loop. */
static void publish_gap(struct sse_hub *h, const char *space, uint64_t skipped, uint64_t version)
{
    uint64_t last = h->next_id;
    h->next_id += skipped;
    ring_clear(h);
    struct buf b;
    buf_init(&b);
    http_chunk_start(&b);
    buf_puts(&b, "event: reset\ndata: {\"last_event_id\":");
    buf_put_u64(&b, last);
    json_kv_u64(&b, "oldest", h->next_id + 1);
    json_kv_str(&b, "space", space);
    json_kv_u64(&b, "skipped", skipped);
    json_kv_u64(&b, "version", version);
    buf_puts(&b, "}\n\n");
    struct rbuf *frame = http_chunk_finish(&b);
    h->stats.published++;
    publish_batch(h, SSE_CHANGE, &space, &frame, 1);
}

/* did the commit move space past since? */
static bool commit_moved(const struct change_rec *c, size_t n, const struct space_stats *spaces, size_t nspaces,
                         const char *space, uint64_t since)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(c[i].space, space) && c[i].version > since) return true;
    for (size_t i = 0; i < nspaces; i++)
        if (spaces[i].changes_skipped && !strcmp(spaces[i].name, space) && spaces[i].version > since) return true;
    return false;
}

void sse_changes_committed(struct server *srv, const struct change_rec *c, size_t n, const struct space_stats *spaces,
                           size_t nspaces)
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
        struct space *sp = spaces_get(srv->spaces, c[i].space);
        if (sp) sp->changes_seen++;
    }
    buf_free(&b);
    if (n) publish_batch(h, SSE_CHANGE, sp_names, frames, n);
    if (frames != stack_frames) free(frames);
    if (sp_names != stack_spaces) free(sp_names);
    for (size_t i = 0; i < nspaces; i++) {
        if (!spaces[i].changes_skipped) continue;
        publish_gap(h, spaces[i].name, spaces[i].changes_skipped, spaces[i].version);
        struct space *sp = spaces_get(srv->spaces, spaces[i].name);
        if (sp) sp->changes_seen += spaces[i].changes_skipped;
    }
    /* wake the live feeds and long polls of the spaces that moved */
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &h->waiters) {
        struct waiter *w = container_of(pos, struct waiter, link);
        if (commit_moved(c, n, spaces, nspaces, w->space, w->since)) waiter_answer(h, w, false);
    }
    list_foreach_safe(pos, tmp, &h->feeds) {
        struct feed *f = container_of(pos, struct feed, link);
        if (commit_moved(c, n, spaces, nspaces, f->space, f->sent)) {
            f->dirty = true;
            if (!f->reading && !f->r->on_drain) feed_read(f);
        }
    }
}

/* ---- keepalive, shutdown ------------------------------------------------ */

static void on_ping(uv_timer_t *t)
{
    struct sse_hub *h = container_of(t, struct sse_hub, ping);
    h->ping_gen++;                   /* the subscribers: in a round, like events */
    fanout_kick(h);
    struct list *pos, *tmp;
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
        enum visit v;
        while ((v = sub_visit(h, s)) == VISIT_MORE) {}   /* what is pending first */
        if (v == VISIT_GONE) continue;
        sub_unlink(h, s);
        r->on_abort = NULL;
        r->on_drain = NULL;
        if (r->conn) {
            /* the queue goes after the write in flight, then the end */
            if (s->qlen) http_stream_queue_chunks(r, s->q, s->qlen, 0);
            http_stream_write_chunk(r, h->shutdown_frame);
            http_stream_end(r);
        }
    }
    h->cursor = NULL;
    uv_idle_stop(&h->turn);
    while (h->pend) {
        struct batch *b = h->pend;
        h->pend = b->next;
        batch_free(b);
    }
    h->pend_tail = &h->pend;
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
    h->pend_tail = &h->pend;
    h->ring_cap = srv->cfg->sse_replay_events;
    h->ring = h->ring_cap ? xcalloc(h->ring_cap, sizeof *h->ring) : NULL;
    /* ids keep growing across restarts: start from the clock */
    h->next_id = now_ms_wall() * 1000;
    h->ping_frame = http_chunk_new(": ping\n\n", 8);
    h->retry_frame = http_chunk_new("retry: 2000\n\n", 13);
    static const char of[] = "event: overflow\ndata: {\"reason\":\"the client did not keep up\"}\n\n";
    h->overflow_frame = http_chunk_new(of, sizeof of - 1);
    static const char sd[] = "event: shutdown\ndata: {}\n\n";
    h->shutdown_frame = http_chunk_new(sd, sizeof sd - 1);
    uv_timer_init(srv->loop, &h->ping);
    uv_timer_start(&h->ping, on_ping, srv->cfg->sse_keepalive_ms, srv->cfg->sse_keepalive_ms);
    uv_unref((uv_handle_t *)&h->ping);
    uv_idle_init(srv->loop, &h->turn);
    h->handles = 2;
    srv->sse = h;
    server_add_shutdown_hook(srv, on_shutdown, h);
}

static void hub_closed(uv_handle_t *t)
{
    struct sse_hub *h = t->data;
    if (--h->handles == 0) free(h);
}

void sse_free(struct server *srv)
{
    struct sse_hub *h = srv->sse;
    if (!h) return;
    ring_clear(h);
    free(h->ring);
    while (h->pend) {
        struct batch *b = h->pend;
        h->pend = b->next;
        batch_free(b);
    }
    free(h->scratch);
    rbuf_unref(h->ping_frame);
    rbuf_unref(h->retry_frame);
    rbuf_unref(h->overflow_frame);
    rbuf_unref(h->shutdown_frame);
    srv->sse = NULL;
    h->ping.data = h->turn.data = h;
    uv_close((uv_handle_t *)&h->ping, hub_closed);
    uv_close((uv_handle_t *)&h->turn, hub_closed);
}

void sse_get_stats(struct server *srv, struct sse_stats *out)
{
    struct sse_hub *h = srv->sse;
    *out = h->stats;
    out->subscribers = h->nsubs + h->nfeeds;
    out->queued_bytes = h->queued;
    out->backlog_events = 0;
    for (const struct batch *b = h->pend; b; b = b->next) out->backlog_events += b->n;
}
