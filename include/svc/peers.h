/* peers.h - persistent peers: the registry of a space's named peers (table
 * peers), and the schedule that starts a sync job for each that syncs
 * every N seconds (backing off while it fails).
 *
 * Threads: the registry (srv->sync->peers) belongs to the loop; peer_apply
 * runs on the writer thread on the op's own copy; peers_load_work on the
 * threadpool at start.
 */
#ifndef SNAPSYNC_PEERS_H
#define SNAPSYNC_PEERS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/util.h"
#include "store/writer.h"

struct server;
struct sync_job;

struct peer_def {
    struct list link;
    char space[64], name[64], url[512], peer_space[64], direction[8];
    char *token;
    int64_t space_id;
    uint64_t every_s, created_at;
    char last_job[27], last_status[16], last_error[300];   /* last_status: a sync_status_name() */
    uint64_t last_run_at, next_run_ms;   /* next_run: loop clock */
    unsigned failures;
    bool running;
};

/* A change to the registry: put (def), remove, or a job's outcome
 * (status_only). */
struct peer_op {
    struct wop op;
    struct server *srv;
    struct peer_def def;             /* the op's own copy (its token owned) */
    char actor[32], remote[56];
    bool remove, status_only;
    bool created;                    /* out (writer): a put that made a new peer */
};

/* Writer thread: stores the op in its transaction, with its audit record. */
int peer_apply(struct wtx *tx, struct wop *op);
/* Loop: after the op committed (op->status 0), the registry follows it. */
void peer_op_committed(struct peer_op *po);
void peer_op_free(struct peer_op *po);

struct peer_def *peer_find(struct server *srv, const char *space, const char *name);
void peer_def_free(struct peer_def *p);
/* Loop: the space is gone: its peers go from the registry. */
void peers_space_deleted(struct server *srv, const char *space);
/* Loop: a job of a persistent peer ended: remember how, and when to run
 * again. */
void peers_job_finished(struct sync_job *j);
/* Loop, at start: loads the registry (srv->loading until it is in) and
 * starts the schedule. */
void peers_start(struct server *srv);
/* Loop: the registry emptied. */
void peers_free(struct server *srv);

#endif
