/* read.h - the read side: a job that runs on the threadpool with a pooled
 * read connection inside one read transaction, and whose answer waits until
 * the newest version it shows is acknowledged (writer.h struct
 * durable_wait). Loop thread unless noted. */
#ifndef SNAPSYNC_READ_H
#define SNAPSYNC_READ_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/entity.h"
#include "core/err.h"
#include "core/jobs.h"
#include "store/writer.h"

struct store;

struct read_job;
/* Runs on a worker with a read connection; fills rj->out, or fails with
 * read_fail(). Return value is ignored. */
typedef void (*read_fn)(sqlite3 *db, struct read_job *rj);
typedef void (*read_done_fn)(struct read_job *rj, struct http_req *r);

struct read_job {
    struct job job;
    struct store *st;
    read_fn fn;
    read_done_fn done;               /* NULL: send out as JSON with 200 */
    /* inputs (owned copies) */
    int64_t space_id;
    char space[64], collection[64], id[129];
    char cursor[256];
    uint64_t since, limit;
    uint64_t until;                  /* change reads: the newest version to show (see changes_until) */
    bool flag;                       /* handler-specific switch */
    char *text;                      /* handler-specific, freed */
    void *arg;                       /* handler-specific, freed */
    void *user;                      /* handler-specific, not freed */
    bool detached;                   /* no request: done() always runs, with r == NULL,
                                        and handles rj->err itself */
    /* outputs */
    struct err err;                  /* status 0 = ok */
    struct buf out;
    char etag[REV_MAX];
    uint64_t n;
    /* the newest version of rj->space_id the answer shows: when the loop
     * does not yet know it as acknowledged, the answer waits (writer.h
     * struct durable_wait). 0: not tracked. */
    uint64_t seen;
    struct durable_wait hold;
};

/* What read_attach installs, kept in the store (store_read_side). */
struct read_side {
    struct job_pool *pool;
    struct writer *writer;           /* NULL: every read counts as durable */
    void (*answer)(struct read_job *rj, struct http_req *r);
};

struct read_job *read_job_new(void);
/* How answers leave: answer(rj, r) runs on the loop for a job submitted
 * for a request that is still there, once what it read is durable; it
 * sends rj's error, calls rj->done, or sends rj->out (api/util.c installs
 * it). The pool holds requests through its hooks. Loop thread, at start. */
void read_attach(struct store *st, struct job_pool *pool, struct writer *w,
                 void (*answer)(struct read_job *rj, struct http_req *r));
/* Runs fn on a worker inside one read transaction of a pooled connection,
 * then answers r (see read_attach). */
void read_start(struct store *st, struct http_req *r, struct read_job *rj, read_fn fn, read_done_fn done);
/* No request behind it: done() always runs (r == NULL) and handles errors. */
void read_start_detached(struct store *st, struct read_job *rj, read_fn fn, read_done_fn done);
/* Frees a job's owned buffers and the job (after done, when it was not
 * answered through read_start). */
void read_job_free(struct read_job *rj);
void read_fail(struct read_job *rj, int status, const char *code, const char *fmt, ...) PRINTF_LIKE(4, 5);

#endif
