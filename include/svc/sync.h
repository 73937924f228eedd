/* sync.h - multi-instance sync: sync jobs that pull from and push to a
 * peer with checkpoints (the job and its state machine: sync_job.h), the
 * registry of persistent peers (peers.h) and blob transfers
 * (blob_transfer.h). The replication core they share with POST /replicate
 * is replicate.h.
 *
 * Threads: everything here runs on the loop thread unless noted; the
 * engine's own steps are `_work` (threadpool: parsing pages, reading
 * checkpoints, moving blobs), `_apply` (writer thread: pages, checkpoints,
 * job rows) and `_done` (loop). Nothing here answers a request: who starts
 * a job and waits for it sets its answer callback (api/sync.c).
 */
#ifndef SNAPSYNC_SYNC_H
#define SNAPSYNC_SYNC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/entity.h"
#include "core/util.h"
#include "svc/blob_transfer.h"
#include "svc/replicate.h"
#include "svc/sync_job.h"

struct server;
struct space;

#define SYNC_KEEP 200                /* finished jobs kept in memory */

/* The engine's calls up to the files above it (installed by sync_ctx.c):
 * the core (sync.c) depends on none of them. */
struct sync_hooks {
    void (*pull_pump)(struct sync_job *j);       /* sync_pull.c: the pull phase's step */
    void (*push_step)(struct sync_job *j);       /* sync_push.c: the push phase's step */
    void (*boot_step)(struct sync_job *j);       /* sync_bootstrap.c: the bootstrap phase's step */
    void (*job_release)(struct sync_job *j);     /* sync_push.c: what a job being freed holds */
    void (*job_ended)(struct sync_job *j);       /* peers.c: a persistent peer's job ended */
};

/* The loop's sync state (srv->sync). */
struct sync_ctx {
    struct sync_hooks hooks;
    struct list jobs;                /* struct sync_job, newest last */
    size_t n;
    struct blob_gate gate;           /* blob transfers on the pool */
    struct list peers;               /* struct peer_def */
    uint64_t timeout_ms;             /* each peer request: SYNC_TIMEOUT_MS (a test hook may shorten it) */
    uv_timer_t tick;                 /* the peers' schedule */
    bool tick_on;
};

/* Start-up, main thread, before the loop runs: sync jobs a stopped server
 * left `running` become `failed` ("interrupted: ..."), as snapshots do.
 * Returns 0, or -1 with err filled. */
int sync_recover(void *db /* sqlite3 */, char *err, size_t errlen);
void sync_init(struct server *srv);
void sync_free(struct server *srv);
struct sync_blob_stats {
    uint64_t running, waiting, waited;
};
void sync_blob_stats(struct server *srv, struct sync_blob_stats *out);
/* Loop: is a sync job of this space running? */
bool sync_space_running(struct server *srv, const char *space);
/* Loop: the space was deleted (its peers' rows with it): forget its peers. */
void sync_space_deleted(struct server *srv, const char *space);

/* What a job is started with (copied). */
struct sync_params {
    const char *url;                 /* the peer's base URL (peer_base_url) */
    const char *peer_space, *token;
    const char *direction;           /* "pull", "push" or "both" */
    const char *actor, *remote;      /* for the audit records */
    const char *peer_name;           /* a persistent peer's job, or NULL */
    bool force;                      /* a full diff: the checkpoints are not read */
    bool bootstrap;                  /* "bootstrap":"snapshot": an empty space starts from the peer's snapshot */
};

/* A new running job of space sp (published; the caller sets answer and its
 * waiter or accepted request, then sync_job_run()). */
struct sync_job *sync_job_new(struct server *srv, struct space *sp, const struct sync_params *p);
/* Moves the job on (its first step, after a new job). */
void sync_job_run(struct sync_job *j);
/* Stores the job's row and its sync.start audit now (a job answered with
 * 202: the answer follows the row). */
void sync_job_save_start(struct sync_job *j);
/* The running job of space with that peer space, or NULL. */
struct sync_job *sync_running_for(struct server *srv, const char *space, const char *url, const char *pspace);
/* A job of the space held in memory, or NULL. */
struct sync_job *sync_job_find(struct server *srv, const char *space, const char *id);

#endif
