/* Unit tests: the SSE hub's replay ring (svc/sse.c) without a listening
 * server: a hub on a uv loop, events published into it, and the replay a
 * client resuming from a Last-Event-ID would get (inside the ring, before
 * it, past the newest), filtered by topic and space; the ring's count cap
 * (--sse-replay-events) and the byte cap a subscriber's queue is held to
 * (--sse-queue-bytes, sse_frames_fit). */
#include <stdio.h>
#include <stdlib.h>

#include "test.h"
#include "core/cli.h"
#include "core/util.h"
#include "net/http.h"
#include "net/server.h"
#include "store/spaces.h"
#include "store/writer.h"
#include "svc/sse.h"

static uv_loop_t loop;
static struct config cfg;
static struct server srv;            /* cfg, loop and spaces: all the hub reads */
static uint64_t base;                /* the id before the first event published */

/* the id a frame carries ("id: N\n" after the chunk head) */
static uint64_t frame_id(const struct rbuf *f)
{
    const char *p = f->data + HTTP_CHUNK_HEAD;
    CHECK(!strncmp(p, "id: ", 4));
    return strtoull(p + 4, NULL, 10);
}

static bool frame_has(const struct rbuf *f, const char *s)
{
    return memmem(f->data + HTTP_CHUNK_HEAD, http_chunk_payload_len(f), s, strlen(s)) != NULL;
}

/* Publishes n events, alternating spaces a and b, topic change (every
 * third a snapshot). */
static void publish(int n)
{
    for (int i = 0; i < n; i++) {
        char data[64];
        int l = snprintf(data, sizeof data, "{\"n\":%d}", i);
        sse_publish(&srv, i % 3 == 2 ? SSE_SNAPSHOT : SSE_CHANGE, i % 2 ? "b" : "a", data, (size_t)l);
    }
}

/* ids the replay from `last` gives a filter, space-separated, relative to base */
static void replay(const struct sse_filter *f, bool has_last, uint64_t last, struct sse_resume *rp, char *out,
                   size_t cap)
{
    struct rbuf *fr[64];
    sse_resume_point(srv.sse, has_last, last, rp);
    CHECK(sse_ring_len(srv.sse) <= ARRAY_SIZE(fr));
    size_t n = sse_replay(srv.sse, f, rp, fr), o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%llu", i ? " " : "", (unsigned long long)(frame_id(fr[i]) - base));
}

static void test_ring(void)
{
    struct sse_filter all = {.topics = SSE_CHANGE | SSE_SNAPSHOT | SSE_SYNC, .all_spaces = true};
    struct sse_resume rp;
    char got[256];
    /* no event yet: a client without a last id starts at the next one */
    sse_resume_point(srv.sse, false, 0, &rp);
    base = rp.from - 1;
    CHECK_INT(sse_ring_len(srv.sse), 0);
    publish(8);                      /* ids base+1 .. base+8; the ring keeps 5 */
    CHECK_INT(sse_ring_len(srv.sse), 5);

    /* no Last-Event-ID: live events only */
    replay(&all, false, 0, &rp, got, sizeof got);
    CHECK_STR(got, "");
    CHECK_INT(rp.from, base + 9);
    CHECK(!rp.reset);
    /* inside the ring: what came after it */
    replay(&all, true, base + 6, &rp, got, sizeof got);
    CHECK_STR(got, "7 8");
    CHECK_INT(rp.from, base + 7);
    CHECK(!rp.reset);
    CHECK_INT(rp.oldest, base + 4);
    /* just before the oldest the ring holds: still no gap */
    replay(&all, true, base + 3, &rp, got, sizeof got);
    CHECK_STR(got, "4 5 6 7 8");
    CHECK(!rp.reset);
    /* the newest: nothing to replay */
    replay(&all, true, base + 8, &rp, got, sizeof got);
    CHECK_STR(got, "");
    CHECK(!rp.reset);
    CHECK_INT(rp.from, base + 9);
    /* before the ring's reach: reset, and all of the ring */
    replay(&all, true, base + 2, &rp, got, sizeof got);
    CHECK_STR(got, "4 5 6 7 8");
    CHECK(rp.reset);
    CHECK_INT(rp.from, base + 4);
    /* past the newest (another server, or ids from before a clock step): reset */
    replay(&all, true, base + 100, &rp, got, sizeof got);
    CHECK(rp.reset);
    CHECK_STR(got, "4 5 6 7 8");
}

static void test_filters(void)
{
    struct sse_resume rp;
    char got[256];
    /* in the ring: 4 b change, 5 a change, 6 b snapshot, 7 a change, 8 b change */
    struct sse_filter changes = {.topics = SSE_CHANGE, .all_spaces = true};
    replay(&changes, true, base + 3, &rp, got, sizeof got);
    CHECK_STR(got, "4 5 7 8");
    struct sse_filter b_snap = {.topics = SSE_SNAPSHOT};
    sse_filter_add_space(&b_snap, "b");
    replay(&b_snap, true, base + 3, &rp, got, sizeof got);
    CHECK_STR(got, "6");
    sse_filter_free(&b_snap);
    struct sse_filter a = {.topics = SSE_CHANGE | SSE_SNAPSHOT};
    sse_filter_add_space(&a, "a");
    replay(&a, true, base + 3, &rp, got, sizeof got);
    CHECK_STR(got, "5 7");
    CHECK(sse_filter_wants(&a, SSE_CHANGE, "a"));
    CHECK(!sse_filter_wants(&a, SSE_CHANGE, "b"));
    CHECK(!sse_filter_wants(&a, SSE_SYNC, "a"));
    sse_filter_free(&a);
    struct sse_filter none = {.topics = SSE_SYNC, .all_spaces = true};
    replay(&none, true, base + 3, &rp, got, sizeof got);
    CHECK_STR(got, "");
}

/* the frames themselves: ids, topics and data as published */
static void test_frames(void)
{
    struct sse_filter all = {.topics = SSE_CHANGE | SSE_SNAPSHOT | SSE_SYNC, .all_spaces = true};
    struct sse_resume rp;
    struct rbuf *fr[8];
    sse_resume_point(srv.sse, true, base + 5, &rp);
    CHECK_INT(sse_replay(srv.sse, &all, &rp, fr), 3);
    CHECK(frame_has(fr[0], "\nevent: snapshot\ndata: {\"n\":5}\n\n"));
    CHECK(frame_has(fr[1], "\nevent: change\ndata: {\"n\":6}\n\n"));
    /* committed changes become change events with the change's members */
    struct change_rec c = {.space = "a", .collection = "c", .id = "e1", .rev = "1-ab", .version = 3};
    sse_changes_committed(&srv, &c, 1, NULL, 0);
    sse_resume_point(srv.sse, true, base + 8, &rp);
    CHECK_INT(sse_replay(srv.sse, &all, &rp, fr), 1);
    CHECK_INT(frame_id(fr[0]), base + 9);
    CHECK(frame_has(fr[0], "data: {\"space\":\"a\",\"collection\":\"c\",\"id\":\"e1\",\"rev\":\"1-ab\",\"version\":3,"
                           "\"deleted\":false}\n\n"));
    CHECK_INT(sse_ring_len(srv.sse), 5);
}

/* The byte cap: what a subscriber holds is each frame plus
 * SSE_EVENT_OVERHEAD, and a frame that would pass the cap does not fit. */
static void test_byte_cap(void)
{
    struct sse_filter all = {.topics = SSE_CHANGE | SSE_SNAPSHOT | SSE_SYNC, .all_spaces = true};
    struct sse_resume rp;
    struct rbuf *fr[8];
    sse_resume_point(srv.sse, true, base + 2, &rp);
    size_t n = sse_replay(srv.sse, &all, &rp, fr), total = 0, bytes;
    CHECK_INT(n, 5);
    for (size_t i = 0; i < n; i++) total += fr[i]->len + SSE_EVENT_OVERHEAD;
    CHECK_INT(sse_frames_fit(fr, n, 0, total, &bytes), 5);
    CHECK_INT(bytes, total);
    CHECK_INT(sse_frames_fit(fr, n, 0, total - 1, &bytes), 4);
    CHECK_INT(bytes, total - fr[4]->len - SSE_EVENT_OVERHEAD);
    size_t two = fr[0]->len + fr[1]->len + 2 * SSE_EVENT_OVERHEAD;
    CHECK_INT(sse_frames_fit(fr, n, 0, two, NULL), 2);
    CHECK_INT(sse_frames_fit(fr, n, 1, two, NULL), 1);          /* what is already held counts */
    CHECK_INT(sse_frames_fit(fr, n, two, two, &bytes), 0);
    CHECK_INT(bytes, 0);
    CHECK_INT(sse_frames_fit(fr, 0, 0, two, NULL), 0);
}

/* --sse-replay-events 0: nothing kept, every resume is a reset with an
 * empty replay. */
static void test_no_ring(void)
{
    struct server s0;
    struct config c0 = cfg;
    memset(&s0, 0, sizeof s0);
    c0.sse_replay_events = 0;
    s0.cfg = &c0;
    s0.loop = &loop;
    s0.spaces = srv.spaces;
    sse_init(&s0);
    sse_publish(&s0, SSE_CHANGE, "a", "{}", 2);
    sse_publish(&s0, SSE_CHANGE, "a", "{}", 2);
    CHECK_INT(sse_ring_len(s0.sse), 0);
    struct sse_resume rp;
    sse_resume_point(s0.sse, false, 0, &rp);
    uint64_t next = rp.from;
    sse_resume_point(s0.sse, true, next - 2, &rp);
    CHECK(rp.reset);
    CHECK_INT(rp.from, next);
    struct sse_filter all = {.topics = SSE_CHANGE, .all_spaces = true};
    CHECK_INT(sse_replay(s0.sse, &all, &rp, NULL), 0);
    sse_resume_point(s0.sse, true, next - 1, &rp);
    CHECK(!rp.reset);                /* up to date: nothing was missed */
    sse_free(&s0);
}

int main(void)
{
    cfg_defaults(&cfg);
    cfg.sse_replay_events = 5;
    uv_loop_init(&loop);
    srv.cfg = &cfg;
    srv.loop = &loop;
    srv.spaces = spaces_new();
    sse_init(&srv);
    test_ring();
    test_filters();
    test_frames();
    test_byte_cap();
    test_no_ring();
    sse_free(&srv);
    uv_run(&loop, UV_RUN_DEFAULT);   /* the hubs' handles close */
    CHECK_INT(uv_loop_close(&loop), 0);
    spaces_free(srv.spaces);
    TEST_MAIN_END();
}
