/* jobs.c - see jobs.h. job_submit and the completion run on the loop
 * thread; work() runs on a threadpool thread. */
#include "core/jobs.h"

#include <assert.h>

#include "core/util.h"

void job_pool_init(struct job_pool *p, uv_loop_t *loop, const struct job_req_hooks *hooks)
{
    p->loop = loop;
    p->hooks = hooks;
    p->inflight = 0;
    atomic_init(&p->stopping, false);
}

static void on_work(uv_work_t *w)
{
    struct job *j = container_of(w, struct job, work_req);
    j->work(j);
}

static void on_after_work(uv_work_t *w, int status)
{
    struct job *j = container_of(w, struct job, work_req);
    struct http_req *r = j->req;
    struct job_pool *p = j->pool;
    j->status = status;
    assert(p->inflight > 0);
    p->inflight--;
    /* the client may have left while the worker ran: answer nobody then */
    struct http_req *to = (r && p->hooks->alive(r) && status == 0) ? r : NULL;
    j->done(j, to);                  /* may free j */
    if (r) p->hooks->unref(r);
}

void job_submit(struct job_pool *p, struct job *j, struct http_req *r, job_work_fn work, job_done_fn done)
{
    assert(!r || p->hooks);
    j->pool = p;
    j->req = r;
    j->work = work;
    j->done = done;
    j->status = 0;
    if (r) p->hooks->ref(r);
    p->inflight++;
    int rc = uv_queue_work(p->loop, &j->work_req, on_work, on_after_work);
    if (rc < 0) on_after_work(&j->work_req, rc);      /* cannot happen with a live loop */
}
