/* jobs.h - handing blocking work to the libuv threadpool.
 *
 * Embed struct job in a struct of your own (in: owned copies the worker
 * reads; out: results the worker writes), then job_submit(). work() runs on
 * a threadpool thread and touches only that struct, files it opened and its
 * own SQLite connection. done() runs on the loop thread afterwards; `r` is
 * the request the job was submitted for, or NULL when there is none or the
 * client has left (answer nothing then). done() owns the struct.
 */
#ifndef SNAPSYNC_JOBS_H
#define SNAPSYNC_JOBS_H

#include <uv.h>

struct server;
struct http_req;
struct job;

typedef void (*job_work_fn)(struct job *j);
typedef void (*job_done_fn)(struct job *j, struct http_req *r);

struct job {
    uv_work_t work_req;
    struct server *srv;
    struct http_req *req;        /* holds a reference, or NULL */
    job_work_fn work;
    job_done_fn done;
    int status;                  /* UV_ECANCELED if never run */
};

void job_submit(struct server *srv, struct job *j, struct http_req *r, job_work_fn work, job_done_fn done);

#endif
