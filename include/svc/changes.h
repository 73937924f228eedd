/* changes.h - the change reader: a space's change log (the entities table
 * in version order) read for GET /changes, the live feeds (feed=longpoll,
 * feed=sse) and sync pushes, written as a JSON page or as SSE frames.
 *
 * Threads: the *_work functions are read_fn's (store/read.h): they run on
 * the threadpool with a pooled read connection inside one read
 * transaction, and touch only their read_job. Everything else runs on the
 * loop thread. Pages are read through the store's read side, so
 * read_attach must have run.
 */
#ifndef SNAPSYNC_SVC_CHANGES_H
#define SNAPSYNC_SVC_CHANGES_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/read.h"

struct server;
struct http_req;

#define CHANGES_MAX_COLLECTIONS 16
/* The most changes one read gives: a live feed reads in pages of this many
 * (the list rule's largest limit, api/util.h LIST_MAX). */
#define CHANGES_PAGE_MAX 1000

/* A read's filter, in rj->arg (owned by the job: freed with it). A NULL
 * filter reads every change, entity members only. */
struct changes_arg {
    int ncoll;                       /* 0: every collection */
    char coll[CHANGES_MAX_COLLECTIONS][64];
    bool all_revs;                   /* style=all_revs: history and conflicts */
    char exclude_origin[27];         /* skip revisions that came from this instance (sync pushes) */
    bool deleted_only;               /* tombstones only: what a snapshot, which holds live entities, lacks */
    /* the worker's, while a read runs */
    sqlite3 *db;                     /* set while iterating (worker) */
    int64_t space_id;
    sqlite3_stmt *conf_q;            /* all_revs: one entity's conflicts, prepared once per read */
    int has_conf;                    /* all_revs: -1 unknown, else whether the space has any */
};

/* A fresh copy of filter (NULL: an empty one), for a job to own. */
void *changes_filter_copy(const void *filter);

/* read_fn: the changes of rj->space_id after rj->since and up to rj->until,
 * at most rj->limit, bodies if rj->flag (or all_revs), as
 * {"changes":[...],"last_version":N,"more":B} in rj->out. Sets rj->since
 * to last_version and rj->flag to more, for callers on the loop. */
void changes_json_work(sqlite3 *db, struct read_job *rj);
/* read_fn: SSE frames of the changes after rj->since; sets rj->since to how
 * far it got and rj->flag when there is more. */
void changes_sse_work(sqlite3 *db, struct read_job *rj);

/* A page of all_revs changes for a sync push: detached (no request), done
 * gets the job with user set and handles its status. */
void changes_page(struct server *srv, int64_t space_id, uint64_t since, uint64_t until, uint64_t limit,
                  const char *exclude_origin, read_done_fn done, void *user);
/* Answers a normal /changes page (takes filter). */
void changes_respond(struct http_req *r, int64_t space_id, uint64_t since, uint64_t until, uint64_t limit, bool bodies,
                     void *filter);
/* Loop: the newest version of a space that change reads may show: what the
 * loop has been told is committed (and, with --durability full, fsynced).
 * A reader connection can see a commit before its fsync; a change feed, a
 * sync peer or a live feed that saw such a version could lose it to a power
 * cut after passing it on (a peer's checkpoint would then skip the versions
 * the source hands out again). UINT64_MAX for an unknown space. */
uint64_t changes_until(struct server *srv, const char *space);

#endif
