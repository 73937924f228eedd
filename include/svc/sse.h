/* sse.h - the Server-Sent Events hub (docs/api.md, Server-Sent Events) and the live change feeds
 * (feed=longpoll / feed=sse). The requests' parse and checks are
 * api/feeds.c; the streams, the ring and the fan-out are here.
 *
 * Loop thread only. An event is encoded once into a reference-counted
 * frame ("id: N\nevent: T\ndata: {...}\n\n") that every subscriber's socket
 * shares (no copy per subscriber), and kept in a ring of the last
 * --sse-replay-events for Last-Event-ID replay. A subscriber whose unsent
 * bytes would pass --sse-queue-bytes gets `event: overflow` and is closed,
 * so a slow client never grows memory or blocks the loop. The bytes counted
 * are all it holds: each queued frame, shared or not, plus
 * SSE_EVENT_OVERHEAD for its bookkeeping. Fan-out to many subscribers is
 * cut into turns of a few milliseconds, so the loop keeps serving.
 */
#ifndef SNAPSYNC_SSE_H
#define SNAPSYNC_SSE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

struct server;
struct http_req;
struct change_rec;
struct space_stats;

/* Counted per queued event on top of its frame: its queue slot (8 bytes,
 * 16 with the growth slack), the write request's reference (8) and
 * libuv's copy of its iovec (16), rounded up for the allocator. */
#define SSE_EVENT_OVERHEAD 64

enum sse_topic { SSE_CHANGE = 1, SSE_SNAPSHOT = 2, SSE_SYNC = 4 };

void sse_init(struct server *srv);
void sse_free(struct server *srv);

/* Publishes an event of topic for space (data: a JSON object, copied). */
void sse_publish(struct server *srv, enum sse_topic topic, const char *space, const char *data, size_t len);
/* A write batch committed: change events, and wake the live feeds (the
 * writer's on_commit hook, installed by main.c). */
void sse_changes_committed(struct server *srv, const struct change_rec *c, size_t n, const struct space_stats *spaces,
                           size_t nspaces);

/* ---- subscribers (GET /api/v1/events; its handler is api/feeds.c) ---- */

#define SSE_MAX_SPACES 64

/* What a subscriber takes: topics (enum sse_topic bits) of every space, or
 * of the spaces listed. */
struct sse_filter {
    uint8_t topics;
    bool all_spaces;
    int nspaces;                     /* at most SSE_MAX_SPACES */
    char (*spaces)[64];              /* nspaces entries: most subscribers have one or none */
};
void sse_filter_add_space(struct sse_filter *f, const char *name);
bool sse_filter_wants(const struct sse_filter *f, uint8_t topic, const char *space);
void sse_filter_free(struct sse_filter *f);

/* Is there room for another stream (--sse-max-clients counts subscribers
 * and feed=sse streams)? */
bool sse_has_room(struct server *srv);
/* Starts r's event stream: headers (SSE-Replay-From), `retry:`, then, for a
 * client that names its last event (has_last), what the ring holds after
 * it (an `event: reset` first when the ring no longer reaches back to it),
 * then live events. Takes f's space list over. */
void sse_subscribe(struct http_req *r, struct sse_filter *f, bool has_last, uint64_t last);

/* The replay ring (pure reads of the hub; sse_subscribe uses them). */
struct sse_hub;
struct rbuf;
struct sse_resume {
    bool has_last;
    uint64_t last;                   /* the client's last event id */
    uint64_t oldest;                 /* the oldest id the ring holds (the next id when empty) */
    uint64_t from;                   /* the first id the stream may send: SSE-Replay-From */
    bool reset;                      /* last is not in the ring's reach: replay all of it */
};
void sse_resume_point(const struct sse_hub *h, bool has_last, uint64_t last, struct sse_resume *rp);
size_t sse_ring_len(const struct sse_hub *h);
/* The ring's frames a stream resumed at rp is sent, those f takes, in id
 * order, into out (room for sse_ring_len frames; borrowed). */
size_t sse_replay(const struct sse_hub *h, const struct sse_filter *f, const struct sse_resume *rp, struct rbuf **out);
/* How many of fr[0..n) fit, in order, on top of held bytes without
 * passing cap, each costing its frame plus SSE_EVENT_OVERHEAD; *bytes (if
 * not NULL) is what they cost. Pure. */
size_t sse_frames_fit(struct rbuf *const *fr, size_t n, size_t held, size_t cap, size_t *bytes);

/* ---- live change feeds ---------------------------------------------- */

/* GET /changes?feed=longpoll (called by api_changes_get): answers at once
 * when the space is past since, else when it moves or after timeout_ms. */
void feed_longpoll(struct http_req *r, int64_t space_id, uint64_t since, uint64_t limit, bool bodies,
                   uint64_t timeout_ms, void *changes_arg);
/* A feed=sse stream of space's change log from since on, re-read whenever
 * the space moves (the handler, feed_sse, is api/feeds.c). Takes filter. */
void sse_feed_open(struct http_req *r, int64_t space_id, const char *space, uint64_t since, void *filter);

struct sse_stats {
    uint64_t subscribers, dropped, published, feeds, longpolls;
    uint64_t queued_bytes;           /* held for /events subscribers, as counted against the cap */
    uint64_t backlog_events;         /* events not yet offered to every /events subscriber */
};
void sse_get_stats(struct server *srv, struct sse_stats *out);

#endif
