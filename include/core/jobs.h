/* jobs.h - handing blocking work to the libuv threadpool.
 *
 * Embed struct job in a struct of your own (in: owned copies the worker
 * reads; out: results the worker writes), then job_submit(). work() runs on
 * a threadpool thread and touches only that struct, files it opened and its
 * own SQLite connection. done() runs on the loop thread afterwards; `r` is
 * the request the job was submitted for, or NULL when there is none or the
 * client has left (answer nothing then). done() owns the struct.
 *
 * The pool knows a request only as an opaque reference: it holds one
 * through the hooks the HTTP layer installs (net/server.c), and never looks
 * inside. So core, store and svc submit work without depending on net.
 */
#ifndef SNAPSYNC_JOBS_H
#define SNAPSYNC_JOBS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct http_req;                 /* opaque here: held through job_req_hooks */
struct job;

typedef void (*job_work_fn)(struct job *j);
typedef void (*job_done_fn)(struct job *j, struct http_req *r);

/* How the pool holds a request (installed by net/server.c). */
struct job_req_hooks {
    void (*ref)(struct http_req *r);
    void (*unref)(struct http_req *r);
    bool (*alive)(const struct http_req *r);   /* the client is still there */
};

/* The loop's pool: one per loop, owned by the loop thread. */
struct job_pool {
    uv_loop_t *loop;
    const struct job_req_hooks *hooks;          /* NULL: no requests submitted */
    uint64_t inflight;                          /* submitted, done() not yet run */
    atomic_bool stopping;                       /* workers poll this to cut long jobs short */
};

struct job {
    uv_work_t work_req;
    struct job_pool *pool;
    struct http_req *req;        /* holds a reference, or NULL */
    job_work_fn work;
    job_done_fn done;
    int status;                  /* UV_ECANCELED if never run */
};

void job_pool_init(struct job_pool *p, uv_loop_t *loop, const struct job_req_hooks *hooks);
void job_submit(struct job_pool *p, struct job *j, struct http_req *r, job_work_fn work, job_done_fn done);
/* Any thread: has shutdown begun (long jobs stop at their next check)? */
static inline bool job_pool_stopping(struct job_pool *p) { return atomic_load(&p->stopping); }

#endif
