/* jobs.c - see jobs.h. job_submit and the completion run on the loop
 * thread; work() runs on a threadpool thread. */
#include "jobs.h"

#include "http.h"
#include "server.h"

static void on_work(uv_work_t *w)
{
    struct job *j = container_of(w, struct job, work_req);
    j->work(j);
}

static void on_after_work(uv_work_t *w, int status)
{
    struct job *j = container_of(w, struct job, work_req);
    struct http_req *r = j->req;
    struct server *srv = j->srv;
    j->status = status;
    srv->jobs_inflight--;
    /* the client may have left while the worker ran: answer nobody then */
    struct http_req *to = (r && r->conn && status == 0) ? r : NULL;
    j->done(j, to);                  /* may free j */
    if (r) http_req_unref(r);
}

void job_submit(struct server *srv, struct job *j, struct http_req *r, job_work_fn work, job_done_fn done)
{
    j->srv = srv;
    j->req = r;
    j->work = work;
    j->done = done;
    j->status = 0;
    if (r) http_req_ref(r);
    srv->jobs_inflight++;
    int rc = uv_queue_work(srv->loop, &j->work_req, on_work, on_after_work);
    if (rc < 0) on_after_work(&j->work_req, rc);      /* cannot happen with a live loop */
}
