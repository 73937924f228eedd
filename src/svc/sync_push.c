/* sync_push.c - the push half of a sync job: our changes since the push
 * checkpoint, leaving out the revisions that came from that peer, POSTed to
 * its /replicate a page at a time; the checkpoint advances once the peer
 * accepted the page. A page's blobs go first (the peer refuses nothing for
 * a missing blob, but the entity would be unusable there without it), and
 * the next page is read, its blobs sent, while the peer applies the
 * current one (the read-ahead, enum sync_readahead).
 *
 * Threads: push_blobs_work on the threadpool (its own page), push_cp_apply
 * on the writer thread (its own copy), everything else on the loop.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "svc/changes.h"
#include "net/server.h"
#include "store/read.h"
#include "store/spaces.h"
#include "store/store.h"
#include "store/writer.h"
#include "sync_int.h"

struct push_cp_op {
    struct wop op;
    struct sync_job *j;
    int64_t space_id;
    char peer_url[512], peer_space[64], peer_uid[27];
    uint64_t version;
    uint64_t pull_version;           /* non-zero: the pull checkpoint moves too */
};

static int push_cp_apply(struct wtx *tx, struct wop *op)
{
    struct push_cp_op *p = container_of(op, struct push_cp_op, op);
    if (sync_checkpoint_save(tx, p->space_id, p->peer_url, p->peer_space, "push", p->peer_uid, p->version) < 0 ||
        (p->pull_version &&
         sync_checkpoint_save(tx, p->space_id, p->peer_url, p->peer_space, "pull", p->peer_uid, p->pull_version) < 0))
        return wop_fail(op, 500, "storage_error", "saving the checkpoint failed");
    return 0;
}

/* The push goes on as soon as the peer has acknowledged a page (from
 * push_sent); the checkpoint of that page commits meanwhile, in order (one
 * writer), and the job ends only once the last one has. */
static void push_cp_done(struct wop *op, struct http_req *r)
{
    struct push_cp_op *p = container_of(op, struct push_cp_op, op);
    struct sync_job *j = p->j;
    UNUSED(r);
    j->cp_pending--;
    if (op->err.status) {
        sync_finish(j, 500, "saving the push checkpoint failed");
    } else {
        if (p->version > j->cp_push) j->cp_push = p->version;
        if (p->pull_version > j->cp_pull) j->cp_pull = p->pull_version;
        snprintf(j->cp_push_uid, sizeof j->cp_push_uid, "%s", j->peer_uid);
        if (sync_running(j) && j->phase == SYNC_PHASE_DONE && !j->cp_pending) sync_step(j);
    }
    free(p);
}

static void save_push_cp(struct sync_job *j, uint64_t version, uint64_t pull_version)
{
    struct push_cp_op *p = xcalloc(1, sizeof *p);
    j->cp_pending++;
    p->j = j;
    p->space_id = j->space_id;
    p->version = version;
    p->pull_version = pull_version;
    snprintf(p->peer_url, sizeof p->peer_url, "%s", j->peer_url);
    snprintf(p->peer_space, sizeof p->peer_space, "%s", j->peer_space);
    snprintf(p->peer_uid, sizeof p->peer_uid, "%s", j->peer_uid);
    if (writer_submit(j->srv->writer, &p->op, NULL, push_cp_apply, push_cp_done) < 0) {
        free(p);
        j->cp_pending--;
        sync_finish(j, 503, "the local write queue is full");
    }
}

static void on_push_sent(void *arg, const struct peer_result *res)
{
    struct sync_job *j = arg;
    if (res->status != 200) {
        sync_peer_failed(j, res, "push");
        return;
    }
    j->tries = 0;
    json_error_t je;
    json_t *v = json_loadb(res->body->data ? res->body->data : "", res->body->len, 0, &je);
    j->pushed += (uint64_t)json_integer_value(json_object_get(v, "applied")) +
                 (uint64_t)json_integer_value(json_object_get(v, "conflicts"));
    /* what the peer could not apply: its count, or the results that say
     * "error" if it counts fewer (an answer is not trusted to agree) */
    uint64_t errors = 0, listed = 0;
    json_t *ev = json_object_get(v, "errors");
    if (json_is_integer(ev) && json_integer_value(ev) > 0) errors = (uint64_t)json_integer_value(ev);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(v, "results"), i, x) {
        const char *st = json_name(json_object_get(x, "status"));
        if (!st) continue;
        const char *c = json_name(json_object_get(x, "collection")), *id = json_name(json_object_get(x, "id"));
        if (!strcmp(st, "conflict")) {
            sync_conflict_seen(j, c, id);
        } else if (!strcmp(st, "error")) {
            listed++;
            sync_error_item_add(j, "push", c, id, json_name(json_object_get(x, "error")),
                           json_name(json_object_get(x, "message")));
        }
    }
    j->errors += errors > listed ? errors : listed;
    uint64_t before = (uint64_t)json_integer_value(json_object_get(v, "version_before"));
    uint64_t after = (uint64_t)json_integer_value(json_object_get(v, "server_version"));
    uint64_t pull_to = sync_push_pull_to(j, before, after);
    json_decref(v);
    if (pull_to) j->cp_pull = pull_to;       /* the next page's version_before is compared with it */
    j->push_sent = j->page_cp;
    if (!j->push_target || j->push_target < j->push_sent) j->push_target = j->push_sent;
    /* (a job that failed meanwhile keeps the phase it failed in) */
    if (!j->page_more && sync_running(j)) sync_phase_set(j, SYNC_PHASE_DONE);
    save_push_cp(j, j->page_cp, pull_to);
    if (!sync_running(j)) return;  /* the save failed at once */
    sync_publish(j);
    sync_step(j);                                   /* the next page, while the checkpoint commits */
}

/* A push page's blobs go first (threadpool): the peer refuses nothing for a
 * missing blob, but the entity would be unusable there without it. */
struct push_blobs {
    struct job job;
    struct sync_job *j;              /* loop side only */
    char *page;                      /* read-only on the threadpool */
    size_t page_len;
    uint64_t cp;                     /* the page ends at this version */
    bool more;
    struct blob_xfer xfer;
};

static void push_blobs_work(struct job *jb)
{
    struct push_blobs *pb = container_of(jb, struct push_blobs, job);
    /* bodies read from our own database are canonical: a body that names
     * blobs holds the key "_blobs" literally, so a page without the text
     * has none and needs no parse */
    if (!memmem(pb->page, pb->page_len, "\"_blobs\"", 8)) return;
    struct rep_batch b;
    struct json_err je;
    if (rep_batch_parse(&b, pb->page, pb->page_len, &je) == 0) blob_send_work(&pb->xfer, b.blobs, b.nblobs);
    else snprintf(pb->xfer.err, sizeof pb->xfer.err, "reading the local page failed: %s", je.message);
    rep_batch_free(&b);
}

static void push_prefetch(struct sync_job *j);

/* A page whose blobs the peer now has goes out; the next one is read
 * meanwhile. */
static void push_send(struct sync_job *j, struct push_blobs *pb)
{
    j->blobs += pb->xfer.moved;
    j->bytes += pb->xfer.bytes;
    j->page_cp = pb->cp;
    j->page_more = pb->more;
    char *page = pb->page;
    size_t len = pb->page_len;
    if (pb->xfer.err[0]) {
        sync_finish(j, 502, "push: %s", pb->xfer.err);
    } else {
        /* the page goes as it is: /replicate takes {"changes":[...]} too;
         * say who we are so the peer does not send these back to us */
        struct buf b;
        buf_init(&b);
        buf_reserve(&b, len + 64);
        buf_puts(&b, "{\"source_instance\":");
        json_cstr(&b, store_instance_id(j->srv->store));
        buf_putc(&b, ',');
        buf_append(&b, page + 1, len - 1);      /* skip the page's '{' */
        sync_send_peer(j, "POST", "/replicate", b.data, b.len, on_push_sent, true);
        buf_free(&b);
        if (j->page_more) push_prefetch(j);
    }
    free(page);
    free(pb);
}

static void push_blobs_done(struct job *jb, struct http_req *r)
{
    struct push_blobs *pb = container_of(jb, struct push_blobs, job);
    struct sync_job *j = pb->j;
    UNUSED(r);
    blob_gate_release(j->srv, &j->srv->sync->gate);
    push_send(j, pb);
}

/* A read found nothing (left) to send: remember how far it looked. */
static void push_reached_end(struct sync_job *j, uint64_t since)
{
    if (sync_running(j)) sync_phase_set(j, SYNC_PHASE_DONE);
    if (since != j->push_sent) {
        j->push_sent = since;
        save_push_cp(j, since, 0);
    }
    sync_step(j);
}

void sync_push_pre_free(struct sync_job *j)
{
    if (j->ra != SYNC_RA_READY) return;
    assert(j->pre);
    free(j->pre->page);
    free(j->pre);
    j->pre = NULL;
    j->ra = SYNC_RA_NONE;
}

/* The read-ahead landed (the caller has set j->ra: a page ready, the end,
 * or nothing): hand it to sync_step() if it is waiting, else keep it. */
static void push_pre_landed(struct sync_job *j)
{
    assert(j->ra != SYNC_RA_BUSY);
    if (!sync_running(j)) {
        sync_push_pre_free(j);
        return;
    }
    if (j->pre_wanted) {
        j->pre_wanted = false;
        sync_step(j);
    }
}

static void push_pre_blobs_done(struct job *jb, struct http_req *r)
{
    struct push_blobs *pb = container_of(jb, struct push_blobs, job);
    struct sync_job *j = pb->j;
    UNUSED(r);
    blob_gate_release(j->srv, &j->srv->sync->gate);
    j->pipeline--;
    j->pre = pb;
    j->ra = SYNC_RA_READY;
    push_pre_landed(j);
}

static void push_pre_read(struct read_job *rj, struct http_req *r)
{
    struct sync_job *j = rj->user;
    UNUSED(r);
    j->pipeline--;
    if (rj->err.status || !sync_running(j)) {
        j->ra = SYNC_RA_NONE;
        push_pre_landed(j);          /* nothing kept: sync_step() reads it again */
        return;
    }
    if (rj->n == 0) {
        j->ra = SYNC_RA_END;
        j->pre_since = rj->since;
        push_pre_landed(j);
        return;
    }
    struct push_blobs *pb = xcalloc(1, sizeof *pb);
    pb->j = j;
    pb->page = buf_steal(&rj->out, &pb->page_len);
    pb->cp = rj->since;
    pb->more = rj->flag;
    sync_xfer_init(&pb->xfer, j);
    j->pipeline++;
    blob_gate_submit(j->srv, &j->srv->sync->gate, &pb->job, push_blobs_work, push_pre_blobs_done);
}

/* Reads the page after the one being sent (since = its end). */
static void push_prefetch(struct sync_job *j)
{
    struct space *here = spaces_get(j->srv->spaces, j->space);
    if (!here || j->ra != SYNC_RA_NONE) return;
    j->ra = SYNC_RA_BUSY;
    j->pre_from = j->page_cp;
    j->pipeline++;
    changes_page(j->srv, j->space_id, j->page_cp, here->st.version, SYNC_PAGE,
                 j->peer_instance[0] ? j->peer_instance : NULL, push_pre_read, j);
}

static void push_page_read(struct read_job *rj, struct http_req *r)
{
    struct sync_job *j = rj->user;
    UNUSED(r);
    if (rj->err.status) {
        sync_finish(j, 500, "reading local changes failed: %s", rj->err.msg);
        return;
    }
    if (rj->n == 0) {
        push_reached_end(j, rj->since);
        return;
    }
    size_t len;
    char *page = buf_steal(&rj->out, &len);
    struct push_blobs *pb = xcalloc(1, sizeof *pb);
    pb->j = j;
    pb->page = page;
    pb->page_len = len;
    pb->cp = rj->since;
    pb->more = rj->flag;
    sync_xfer_init(&pb->xfer, j);
    blob_gate_submit(j->srv, &j->srv->sync->gate, &pb->job, push_blobs_work, push_blobs_done);
}


/* The push phase's step: a read-ahead page if it follows what the peer
 * acknowledged, else a fresh read from there; the phase ends when there is
 * nothing new. */
void sync_push_step(struct sync_job *j)
{
    struct space *here = spaces_get(j->srv->spaces, j->space);
    if (j->ra == SYNC_RA_BUSY) {     /* the next page is on its way */
        j->pre_wanted = true;
        return;
    }
    if ((j->ra == SYNC_RA_READY || j->ra == SYNC_RA_END) && j->pre_from != j->push_sent) {
        /* The read-ahead follows the page that was in flight, and the
         * peer did not acknowledge that page (its send failed and this
         * is the retry): sending the read-ahead now would skip the
         * page, and its checkpoint would pass it for good. Drop it
         * (its blobs did reach the peer) and read again from what the
         * peer acknowledged. */
        if (j->ra == SYNC_RA_READY) {
            j->blobs += j->pre->xfer.moved;
            j->bytes += j->pre->xfer.bytes;
        }
        sync_push_pre_free(j);
        j->ra = SYNC_RA_NONE;
    }
    if (j->ra == SYNC_RA_READY) {
        struct push_blobs *pb = j->pre;
        j->pre = NULL;
        j->ra = SYNC_RA_NONE;
        push_send(j, pb);
        return;
    }
    if (j->ra == SYNC_RA_END) {      /* the prefetch found the end */
        j->ra = SYNC_RA_NONE;
        push_reached_end(j, j->pre_since);
        return;
    }
    if (!here || here->st.version <= j->push_sent) {  /* nothing new here: no request */
        sync_phase_set(j, SYNC_PHASE_DONE);
        sync_step(j);
        return;
    }
    changes_page(j->srv, j->space_id, j->push_sent, here->st.version, SYNC_PAGE,
                 j->peer_instance[0] ? j->peer_instance : NULL, push_page_read, j);
}
