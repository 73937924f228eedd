/* sync_pull.c - the pull half of a sync job: the peer's changes since the
 * pull checkpoint, as a pipeline of pages.
 *
 * GET peer /changes?since=cp&style=all_revs in pages of 250, 500, then
 * 1,000: the next page is fetched while earlier ones are parsed on the
 * threadpool and applied by the writer, at most SYNC_PAGES_HELD at once,
 * applied in order; each page's writer op also advances the pull
 * checkpoint in the same transaction, so a job killed at any moment
 * resumes exactly after the last applied page.
 *
 * Threads: pull_parse_work and pull_blobs_work on the threadpool (each on
 * its own page), pull_apply on the writer thread (the page's copies of the
 * job's identity), everything else on the loop.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "net/server.h"
#include "store/store.h"
#include "store/writer.h"
#include "svc/blobs.h"
#include "sync_int.h"

/* One page of the peer's feed on its way in: fetched on the loop (curl),
 * parsed, checked and canonicalized on the threadpool with its blobs moved
 * (pull_parse_work), then applied by the writer with the checkpoint in the
 * same transaction (pull_apply). Pages are fetched in order, and handed to
 * the writer in that same order whatever order their parses finish in;
 * at most SYNC_PAGES_HELD exist at once (memory stays bounded). */
struct pull_page {
    struct job job;
    struct wop op;
    struct list link;                /* j->ready: parsed, waiting for its turn */
    struct sync_job *j;              /* loop side */
    uint64_t seq, since;
    bool check_cp;                   /* not the job's first page: see pull_apply */
    char *raw;                       /* the page as received; freed by the parse */
    size_t raw_len;
    bool tail_ok, tail_more;         /* what sync_tail_scan read on the loop */
    uint64_t tail_last;
    /* threadpool results */
    int parse_rc;
    struct json_err err;
    struct rep_batch batch;
    bool blobs_fetched;              /* the gated blob job was sent */
    struct blob_xfer xfer;
    /* writer: copies of the job's identity, and the counts */
    char peer_instance[27], peer_uid[27], peer_url[512], peer_space[64], space[64];
    int64_t space_id;                /* the space whose references the blob job checked */
    struct rep_counts cnt;
};

static void pull_submit_ready(struct sync_job *j);

/* No page may reach the writer any more: the pull failed, or the job ended
 * some other way (shutdown). */
static bool pull_stopping(const struct sync_job *j)
{
    return j->pull_error[0] || !sync_running(j);
}

static void pull_page_free(struct pull_page *p)
{
    blob_xfer_release(&p->xfer);
    rep_batch_free(&p->batch);
    free(p->raw);
    free(p);
}

/* Stops the pull: no more fetches; the job finishes with this error once
 * the pages already on their way are done with (so a page that is being
 * applied is never reported as lost). */
void sync_pull_stop(struct sync_job *j, int http, const char *fmt, ...)
{
    if (!j->pull_error[0]) {
        j->pull_status = http;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->pull_error, sizeof j->pull_error, fmt, ap);
        va_end(ap);
    }
    pull_submit_ready(j);            /* drops the parsed pages that wait */
    sync_pull_pump(j);
}

/* Writer thread. The page's revisions and the checkpoint at its end, in one
 * transaction. A page other than the job's first applies only on top of the
 * page before it: if the stored checkpoint is not where this page starts
 * (the page before failed, or something moved the checkpoint), nothing is
 * applied -- a later page can never skip over changes of an earlier one. */
static int pull_apply(struct wtx *tx, struct wop *op)
{
    struct pull_page *p = container_of(op, struct pull_page, op);
    struct space_stats *sp = wtx_space(tx, p->space);
    if (!sp || sp->id != p->space_id) return wop_fail(op, 404, "space_not_found", "the local space is gone");
    /* the blobs the page names arrived by sync: each was referenced here
     * already or fetched from the peer's space and hash-checked (else the
     * page never gets here), so the space references them now */
    for (size_t k = 0; k < p->batch.nblobs; k++)
        if (blobs_ref_add(tx, sp->id, p->batch.blobs[k], NULL) < 0)
            return wop_fail(op, 500, "storage_error", "recording the page's blobs failed");
    if (p->check_cp) {
        sqlite3_stmt *st = wtx_stmt(tx, SYNC_SQL_CHECKPOINT_GET);
        sqlite3_bind_int64(st, 1, sp->id);
        sqlite3_bind_text(st, 2, p->peer_url, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, p->peer_space, -1, SQLITE_STATIC);
        uint64_t at = 0;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), p->peer_uid))
            at = (uint64_t)sqlite3_column_int64(st, 1);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "reading the checkpoint failed");
        if (at != p->since)
            return wop_fail(op, 409, "out_of_order", "the page before this one was not applied (checkpoint %llu, page "
                            "from %llu)", (unsigned long long)at, (unsigned long long)p->since);
    }
    char origin[80];
    snprintf(origin, sizeof origin, "sync:%s", p->peer_instance);
    if (p->peer_instance[0]) wtx_set_origin(tx, p->peer_instance);
    if (rep_apply_batch(tx, op, sp, &p->batch, origin, &p->cnt, NULL) < 0) return -1;
    if (sync_checkpoint_save(tx, sp->id, p->peer_url, p->peer_space, "pull", p->peer_uid, p->batch.last_version) < 0)
        return wop_fail(op, 500, "storage_error", "saving the checkpoint failed");
    return 0;
}

static void pull_applied(struct wop *op, struct http_req *r)
{
    struct pull_page *p = container_of(op, struct pull_page, op);
    struct sync_job *j = p->j;
    UNUSED(r);
    j->held--;
    j->pipeline--;
    if (op->err.status) {
        sync_pull_stop(j, 500, "applying pulled changes failed: %s", op->err.msg);
    } else {
        j->pulled += p->cnt.applied + p->cnt.conflicts;
        j->errors += p->cnt.errors;
        for (size_t i = 0; (p->cnt.conflicts || p->cnt.errors) && i < p->batch.n; i++) {
            const struct rep_item *it = &p->batch.items[i];
            if (it->conflicted) sync_conflict_seen(j, it->collection, it->id);
            if (it->err_code) sync_error_item_add(j, "pull", it->collection, it->id, it->err_code, it->err);
        }
        j->cp_pull = p->batch.last_version;
        snprintf(j->cp_pull_uid, sizeof j->cp_pull_uid, "%s", j->peer_uid);
        if (sync_running(j)) sync_publish(j);
        sync_pull_pump(j);
    }
    pull_page_free(p);
}

/* Hands parsed pages to the writer, in page order; once the pull is
 * stopping, drops them instead (none reaches the writer after a failure). */
static void pull_submit_ready(struct sync_job *j)
{
    while (pull_stopping(j) && !list_empty(&j->ready)) {
        struct pull_page *p = container_of(j->ready.next, struct pull_page, link);
        list_remove(&p->link);
        j->held--;
        j->pipeline--;
        pull_page_free(p);
    }
    for (;;) {
        struct pull_page *next = NULL;
        struct list *l;
        for (l = j->ready.next; l != &j->ready; l = l->next) {
            struct pull_page *p = container_of(l, struct pull_page, link);
            if (p->seq == j->seq_submit) { next = p; break; }
        }
        if (!next) return;
        list_remove(&next->link);
        j->seq_submit++;
        if (writer_submit(j->srv->writer, &next->op, NULL, pull_apply, pull_applied) < 0) {
            j->held--;
            j->pipeline--;
            pull_page_free(next);
            sync_pull_stop(j, 503, "the local write queue is full");
            continue;
        }
    }
}

/* threadpool */
static void pull_parse_work(struct job *jb)
{
    struct pull_page *p = container_of(jb, struct pull_page, job);
    p->parse_rc = rep_batch_parse(&p->batch, p->raw, p->raw_len, &p->err);
    free(p->raw);
    p->raw = NULL;
    if (p->parse_rc == 0 && !p->batch.has_last) {
        p->parse_rc = -1;
        snprintf(p->err.message, sizeof p->err.message, "the page lacks last_version");
    }
}

/* blobs the page's entities reference come first (an entity naming a blob
 * this server lacks would be unusable): a second job, through the gate */
static void pull_blobs_work(struct job *jb)
{
    struct pull_page *p = container_of(jb, struct pull_page, job);
    blob_fetch_work(&p->xfer, p->batch.blobs, p->batch.nblobs);
}

static void pull_parsed(struct job *jb, struct http_req *r);

static void pull_blobs_done(struct job *jb, struct http_req *r)
{
    struct pull_page *p = container_of(jb, struct pull_page, job);
    blob_gate_release(p->j->srv, &p->j->srv->sync->gate);
    pull_parsed(jb, r);
}

static void pull_parsed(struct job *jb, struct http_req *r)
{
    struct pull_page *p = container_of(jb, struct pull_page, job);
    struct sync_job *j = p->j;
    UNUSED(r);
    if (p->parse_rc == 0 && p->batch.nblobs && !p->blobs_fetched && !pull_stopping(j)) {
        p->blobs_fetched = true;
        blob_gate_submit(j->srv, &j->srv->sync->gate, &p->job, pull_blobs_work, pull_blobs_done);
        return;
    }
    j->blobs += p->xfer.moved;
    j->bytes += p->xfer.bytes;
    const char *bad = NULL;
    if (p->parse_rc < 0) bad = p->err.message;
    else if (p->tail_ok && (p->tail_last != p->batch.last_version || p->tail_more != p->batch.more))
        bad = "its end does not match what was read ahead";
    else if (p->batch.last_version < p->since || (p->batch.more && p->batch.last_version == p->since))
        bad = "last_version goes backwards";
    if (bad || p->xfer.err[0] || pull_stopping(j)) {
        j->held--;
        j->pipeline--;
        if (bad) sync_pull_stop(j, 502, "the peer's changes page is not usable: %s", bad);
        else if (p->xfer.err[0]) sync_pull_stop(j, 502, "pull: %s", p->xfer.err);
        else sync_pull_pump(j);           /* stopping already: dropped */
        pull_page_free(p);
        return;
    }
    if (!p->tail_ok) {
        /* the end of the page was not read ahead: only now is the next
         * page's start known */
        j->fetch_since = p->batch.last_version;
        j->fetch_more = p->batch.more;
        j->fetch_blocked = false;
    }
    list_insert_tail(&j->ready, &p->link);
    pull_submit_ready(j);
    sync_pull_pump(j);
}


static void on_pull_page(void *arg, const struct peer_result *res)
{
    struct sync_job *j = arg;
    j->fetching = false;
    j->pipeline--;
    if (res->status != 200) {
        j->held--;
        if (!j->pull_error[0] && sync_running(j) && sync_peer_transient(res->status, res->error != NULL, res->timed_out) && j->tries < SYNC_RETRIES &&
            !j->srv->shutting_down) {
            sync_peer_failed(j, res, "pull");         /* retries: the timer calls sync_step() -> sync_pull_pump() */
            return;
        }
        char why[300];
        sync_peer_explain(j, res, "pull", why, sizeof why);
        sync_pull_stop(j, sync_peer_fail_status(j, res), "%s", why);
        return;
    }
    j->tries = 0;
    j->bytes += res->body->len;
    struct pull_page *p = xcalloc(1, sizeof *p);
    p->j = j;
    p->seq = j->seq_next++;
    p->since = j->fetch_since;
    p->check_cp = p->seq != 0;
    p->raw = buf_steal(res->body, &p->raw_len);
    snprintf(p->peer_instance, sizeof p->peer_instance, "%s", j->peer_instance);
    snprintf(p->peer_uid, sizeof p->peer_uid, "%s", j->peer_uid);
    snprintf(p->peer_url, sizeof p->peer_url, "%s", j->peer_url);
    snprintf(p->peer_space, sizeof p->peer_space, "%s", j->peer_space);
    snprintf(p->space, sizeof p->space, "%s", j->space);
    p->space_id = j->space_id;
    sync_xfer_init(&p->xfer, j);
    p->tail_ok = p->raw && sync_tail_scan(p->raw, p->raw_len, &p->tail_last, &p->tail_more);
    if (p->tail_ok && (p->tail_last < p->since || (p->tail_more && p->tail_last == p->since)))
        p->tail_ok = false;          /* let the parse say what is wrong */
    if (p->tail_ok) {
        j->fetch_since = p->tail_last;
        j->fetch_more = p->tail_more;
    } else {
        j->fetch_blocked = true;
    }
    j->pipeline++;
    job_submit(&j->srv->jobs, &p->job, NULL, pull_parse_work, pull_parsed);
    sync_pull_pump(j);
}

/* Moves the pull along: fetches the next page while fewer than
 * SYNC_PAGES_HELD are on their way; ends the phase when the last page is
 * applied, or the job once a stopped pull has drained. Loop thread. */
void sync_pull_pump(struct sync_job *j)
{
    if (!sync_running(j)) return;
    if (j->pull_error[0] || j->srv->shutting_down) {
        if (!j->pull_error[0]) {
            snprintf(j->pull_error, sizeof j->pull_error, "interrupted: the server is shutting down");
            j->pull_status = 503;
        }
        if (j->pipeline == 0) sync_finish(j, j->pull_status, "%s", j->pull_error);
        return;
    }
    if (j->fetching || sync_retry_waiting(j)) return;
    if (j->fetch_more && !j->fetch_blocked && j->held < SYNC_PAGES_HELD) {
        char tail[128];
        /* what came from us does not need to come back */
        /* small pages first: the first page is parsed and applied while the
         * next ones come, instead of one big page going through each stage
         * alone (an incremental sync of 1,000 changes is 3 pages, not 1) */
        if (j->page_limit < SYNC_FIRST_PAGE) j->page_limit = SYNC_FIRST_PAGE;
        snprintf(tail, sizeof tail, "/changes?since=%llu&limit=%d&style=all_revs&exclude_origin=%s",
                 (unsigned long long)j->fetch_since, j->page_limit, store_instance_id(j->srv->store));
        j->page_limit = j->page_limit * 2 < SYNC_PAGE ? j->page_limit * 2 : SYNC_PAGE;
        j->fetching = true;
        j->held++;
        j->pipeline++;
        if (sync_send_peer(j, "GET", tail, NULL, 0, on_pull_page, false) < 0) {
            j->fetching = false;
            j->held--;
            j->pipeline--;
            sync_pull_stop(j, 500, "cannot start a request to the peer");
        }
        return;
    }
    if (!j->fetch_more && !j->fetch_blocked && j->held == 0) {
        sync_phase_set(j, sync_phase_after_pull(j));
        sync_step(j);
    }
}

