/* read.c - see read.h. Submission and completion on the loop thread; the
 * read function on a threadpool thread with its own pooled connection. */
#include "store/read.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "store/store.h"

void read_attach(struct store *st, struct job_pool *pool, struct writer *w,
                 void (*answer)(struct read_job *rj, struct http_req *r))
{
    struct read_side *rs = store_read_side(st);
    rs->pool = pool;
    rs->writer = w;
    rs->answer = answer;
}

struct read_job *read_job_new(void) { return xcalloc(1, sizeof(struct read_job)); }

void read_fail(struct read_job *rj, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(&rj->err, status, code, fmt, ap);
    va_end(ap);
}

static void read_work(struct job *j)
{
    struct read_job *rj = container_of(j, struct read_job, job);
    sqlite3 *db = store_reader_get(rj->st);
    if (!db) {
        read_fail(rj, 500, "storage_error", "no database connection");
        return;
    }
    /* one read transaction: everything the job reads is one snapshot */
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    rj->fn(db, rj);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_reader_put(rj->st, db);
}

void read_job_free(struct read_job *rj)
{
    buf_free(&rj->out);
    free(rj->text);
    free(rj->arg);
    free(rj);
}

/* the version the answer shows is acknowledged now */
static void read_held_ready(struct durable_wait *dw)
{
    struct read_job *rj = container_of(dw, struct read_job, hold);
    struct http_req *r = rj->job.req;
    struct read_side *rs = store_read_side(rj->st);
    const struct job_req_hooks *h = rs->pool->hooks;
    if (h->alive(r)) rs->answer(rj, r);
    h->unref(r);
    read_job_free(rj);
}

static void read_after(struct job *j, struct http_req *r)
{
    struct read_job *rj = container_of(j, struct read_job, job);
    struct read_side *rs = store_read_side(rj->st);
    if (r && rj->seen) {
        rj->hold.space_id = rj->space_id;
        snprintf(rj->hold.space, sizeof rj->hold.space, "%s", rj->space);
        rj->hold.version = rj->seen;
        if (!writer_is_durable(rs->writer, &rj->hold)) {
            rj->hold.ready = read_held_ready;
            rs->pool->hooks->ref(r);  /* j->req: the job's own reference ends when we return */
            writer_wait_durable(rs->writer, &rj->hold);
            return;
        }
    }
    if (rj->detached) {
        rj->done(rj, NULL);
    } else if (r) {
        rs->answer(rj, r);
    }
    read_job_free(rj);
}

void read_start(struct store *st, struct http_req *r, struct read_job *rj, read_fn fn, read_done_fn done)
{
    rj->st = st;
    rj->fn = fn;
    rj->done = done;
    assert(store_read_side(st)->pool);   /* read_attach ran */
    job_submit(store_read_side(st)->pool, &rj->job, r, read_work, read_after);
}

void read_start_detached(struct store *st, struct read_job *rj, read_fn fn, read_done_fn done)
{
    rj->st = st;
    rj->fn = fn;
    rj->done = done;
    rj->detached = true;
    assert(store_read_side(st)->pool);
    job_submit(store_read_side(st)->pool, &rj->job, NULL, read_work, read_after);
}
