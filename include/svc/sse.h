/* sse.h - the Server-Sent Events hub (SPEC §8) and the live change feeds
 * (SPEC §6 feed=longpoll / feed=sse).
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

/* Counted per queued event on top of its frame: its queue slot (8 bytes,
 * 16 with the growth slack), the write request's reference (8) and
 * libuv's copy of its iovec (16), rounded up for the allocator. */
#define SSE_EVENT_OVERHEAD 64

enum sse_topic { SSE_CHANGE = 1, SSE_SNAPSHOT = 2, SSE_SYNC = 4 };

void sse_init(struct server *srv);
void sse_free(struct server *srv);

/* Publishes an event of topic for space (data: a JSON object, copied). */
void sse_publish(struct server *srv, /* Counted per queued event on top of its frame: its queue slot (8 bytes,
 * 16 with the growth slack), the write request's reference (8) and
 * libuv's copy of its iovec (16), rounded up for the allocator. */
#define SSE_EVENT_OVERHEAD 64

enum sse_topic topic, const char *space, const char *data, size_t len);
/* A write batch committed: change events, and wake the live feeds. */
void sse_changes_committed(struct server *srv, const struct change_rec *c, size_t n);

/* GET /api/v1/events */
void api_events(struct http_req *r);
/* GET /changes?feed=longpoll|sse (called by api_changes_get). */
void feed_longpoll(struct http_req *r, int64_t space_id, uint64_t since, uint64_t limit, bool bodies,
                   uint64_t timeout_ms, void *changes_arg);
void feed_sse(struct http_req *r, int64_t space_id, uint64_t since, void *changes_arg);

struct sse_stats {
    uint64_t subscribers, dropped, published, feeds, longpolls;
    uint64_t queued_bytes;           /* held for /events subscribers, as counted against the cap */
    uint64_t backlog_events;         /* events not yet offered to every /events subscriber */
};
void sse_get_stats(struct server *srv, struct sse_stats *out);

#endif
