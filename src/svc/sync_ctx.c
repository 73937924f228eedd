/* sync_ctx.c - the loop's sync state: set up at start, the engine's upward
 * calls installed (the pull, the push, a persistent peer's end: sync.c
 * reaches them only through struct sync_hooks, so the core never depends
 * on the files above it), shutdown, and the end. Loop thread.
 */
#include <stdlib.h>

#include "net/http.h"
#include "net/server.h"
#include "svc/peers.h"
#include "sync_int.h"

void sync_space_deleted(struct server *srv, const char *space)
{
    if (!srv->sync) return;
    peers_space_deleted(srv, space);
    sync_forget_space_jobs(srv->sync, space);
}

static void on_shutdown(struct server *srv, void *arg)
{
    UNUSED(arg);
    /* transfers in flight end now (their callbacks see an error and the
     * jobs finish as failed: "interrupted"); retries waiting on a timer stop */
    struct list *l;
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = l->next) {
        struct sync_job *j = container_of(l, struct sync_job, link);
        if (sync_retry_waiting(j) && sync_running(j)) {
            uv_timer_stop(&j->retry);
            if (j->phase == SYNC_PHASE_PULL && j->pipeline)
                sync_pull_stop(j, 503, "interrupted: the server is shutting down");    /* finishes when drained */
            else if (j->phase == SYNC_PHASE_BOOTSTRAP)
                sync_boot_step(j);   /* ends the job; its file goes once what is out is back */
            else sync_finish(j, 503, "interrupted: the server is shutting down");
        }
    }
    peer_abort_all(srv);
}

void sync_init(struct server *srv)
{
    struct sync_ctx *sc = xcalloc(1, sizeof *sc);
    list_init(&sc->jobs);
    list_init(&sc->peers);
    blob_gate_init(&sc->gate, srv->cfg->workers / 2 ? (unsigned)(srv->cfg->workers / 2) : 1);
    sc->timeout_ms = env_ms("SNAPSYNC_TEST_PEER_TIMEOUT_MS");     /* test hook */
    if (!sc->timeout_ms) sc->timeout_ms = SYNC_TIMEOUT_MS;
    sc->hooks.pull_pump = sync_pull_pump;
    sc->hooks.push_step = sync_push_step;
    sc->hooks.boot_step = sync_boot_step;
    sc->hooks.job_release = sync_push_pre_free;
    sc->hooks.job_ended = peers_job_finished;
    srv->sync = sc;
    server_add_shutdown_hook(srv, on_shutdown, sc);
    peers_start(srv);
}

static void tick_closed(uv_handle_t *h)
{
    free(container_of((uv_timer_t *)h, struct sync_ctx, tick));
}

static void retry_closed(uv_handle_t *h)
{
    sync_job_free(h->data);
}

void sync_free(struct server *srv)
{
    struct sync_ctx *sc = srv->sync;
    if (!sc) return;
    while (!list_empty(&sc->jobs)) {
        struct sync_job *j = container_of(sc->jobs.next, struct sync_job, link);
        list_remove(&j->link);
        sync_push_pre_free(j);
        sync_boot_discard(j);
        if (j->waiter) http_req_unref(j->waiter);
        if (j->accepted) http_req_unref(j->accepted);
        if (j->retry_init) uv_close((uv_handle_t *)&j->retry, retry_closed);
        else sync_job_free(j);
    }
    peers_free(srv);
    blob_gate_free(&sc->gate);
    srv->sync = NULL;
    if (sc->tick_on) uv_close((uv_handle_t *)&sc->tick, tick_closed);
    else free(sc);
}
