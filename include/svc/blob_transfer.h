/* blob_transfer.h - moving blobs between this server and a peer for a sync
 * job: only the blobs the receiving space lacks move, before the entities
 * that name them.
 *
 * A transfer blocks a threadpool thread for as long as it takes (a curl
 * easy handle, file to file), so transfers go through a gate: at most half
 * the pool (at least one) at once, the rest wait in order, and database
 * reads and snapshots always find a thread.
 *
 * Threads: blob_fetch_work and blob_send_work run on the threadpool and
 * write only into their struct blob_xfer; the gate and blob_xfer_release
 * run on the loop.
 */
#ifndef SNAPSYNC_BLOB_TRANSFER_H
#define SNAPSYNC_BLOB_TRANSFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/jobs.h"
#include "core/util.h"

struct server;

/* One page's transfer: in fields set on the loop, out fields written by the
 * worker (read on the loop once its job is done). */
struct blob_xfer {
    char url[600], token[128], data_dir[1024];     /* in: the peer space's base URL */
    char owner[32];                                 /* in: the job's id, for blob pins */
    struct server *srv;                             /* in: its store and blob pins */
    int64_t space_id;                               /* in: our space */
    uint64_t moved, bytes;                          /* out */
    char (*pinned)[65];                             /* out: placed by a pull, pinned until */
    size_t npinned;                                 /*      the page is applied or dropped */
    char err[300];                                  /* out: "" or why the transfer failed */
};

/* The gate (in struct sync_ctx). */
struct blob_gate {
    struct list waiting;             /* struct blob_wait */
    unsigned active, cap;
    uint64_t waited;                 /* how many had to wait (metrics, tests) */
};

void blob_gate_init(struct blob_gate *g, unsigned cap);
void blob_gate_free(struct blob_gate *g);
/* Loop: submits the job now, or once a gated job is done. */
void blob_gate_submit(struct server *srv, struct blob_gate *g, struct job *jb, job_work_fn work, job_done_fn done);
/* Loop: a gated job is done (call first thing in its done callback). */
void blob_gate_release(struct server *srv, struct blob_gate *g);
unsigned blob_gate_waiting(const struct blob_gate *g);

/* Threadpool. pull: fetches those of the hashes our space lacks; each is
 * hash-checked, put in place and pinned (the page's apply references them
 * in its transaction; blob_xfer_release unpins). */
void blob_fetch_work(struct blob_xfer *bj, char (*hashes)[65], size_t nh);
/* Threadpool. push: asks the peer which it lacks, sends those. */
void blob_send_work(struct blob_xfer *bj, char (*hashes)[65], size_t nh);
/* Loop: the page's references are committed, or will never be. */
void blob_xfer_release(struct blob_xfer *bj);

#endif
