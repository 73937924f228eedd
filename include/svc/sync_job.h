/* sync_job.h - a sync job and its state machine.
 *
 * A job pulls from and/or pushes to one peer space. Its status says whether
 * it is still going and how it ended; its phase says which step it is in:
 *
 *   status --> pull --> push --> done        (direction "both")
 *          \--> push ---------/              ("push")
 *          pull ----------------> done       ("pull")
 *   status --> bootstrap --> pull ...        ("bootstrap":"snapshot", pull or both)
 *
 * The bootstrap phase (sync_bootstrap.c) is where a job asked to start an
 * empty space from the peer's newest snapshot decides whether it can,
 * downloads and checks the file, and applies its entities; it always moves
 * on to the pull, from the snapshot's server_version when it applied one,
 * or as a plain pull (boot_reason says why) when it could not.
 *
 * A job that fails keeps the phase it failed in; one that runs to its end
 * is "completed", or "partial" when some items could not be applied. The
 * names (sync_status_name, sync_phase_name) appear only at the edges: the
 * API's JSON, the sync_jobs table, SSE `sync` events and metrics.
 *
 * Threads: a live job belongs to the loop thread (sync.c drives it, with
 * sync_pull.c, sync_push.c and blob_transfer.c). The functions declared
 * here need no loop, server nor network: they decide on the job they are
 * given, so any thread may run them on a job of its own (the unit tests
 * do).
 */
#ifndef SNAPSYNC_SYNC_JOB_H
#define SNAPSYNC_SYNC_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/util.h"

#define SYNC_ERROR_ITEMS 10          /* refused items a job describes (error_items); errors counts them all */

enum sync_status {
    SYNC_RUNNING,
    SYNC_COMPLETED,                  /* everything applied, ignored as known, or kept as a conflict */
    SYNC_PARTIAL,                    /* ran to its end, but some items could not be applied */
    SYNC_FAILED,                     /* stopped by an error (the job's error says which) */
};

enum sync_phase {
    SYNC_PHASE_STATUS,               /* GET peer /sync/status, then the checkpoints */
    SYNC_PHASE_BOOTSTRAP,            /* the peer's newest snapshot into an empty space (then the pull) */
    SYNC_PHASE_PULL,                 /* the peer's changes, in pages */
    SYNC_PHASE_PUSH,                 /* our changes, POSTed to the peer's /replicate */
    SYNC_PHASE_DONE,                 /* nothing left to send or fetch (push checkpoints may still commit) */
};

/* The read-ahead of the next push page (sync_push.c): one at a time. */
enum sync_readahead {
    SYNC_RA_NONE,                    /* none asked for */
    SYNC_RA_BUSY,                    /* its read or blob job is out */
    SYNC_RA_READY,                   /* a page (pre) is ready to send */
    SYNC_RA_END,                     /* the read found nothing more: pre_since is the end */
};

/* An item the job sent or received that could not be applied: one the
 * peer's /replicate answered "error" for (push), or one our own apply
 * refused (pull). */
struct sync_err_item {
    char direction[8];               /* "pull": refused here, "push": refused by the peer */
    char collection[64], id[129];    /* "" when the refusal did not name a valid entity */
    char error[32], message[160];
};

/* A bootstrap from the peer's snapshot ("bootstrap":"snapshot"). */
enum sync_boot {
    SYNC_BOOT_OFF,                   /* not asked for: a plain job */
    SYNC_BOOT_PENDING,               /* asked for, not decided or not done yet */
    SYNC_BOOT_APPLIED,               /* the snapshot was applied; the pull went on from its server_version */
    SYNC_BOOT_SKIPPED,               /* fell back to a plain pull: boot_reason says why */
};

/* The snapshot a bootstrap takes, from the peer's list. */
struct sync_boot_pick {
    char id[27], sha256[65];
    uint64_t server_version, size_bytes, entity_total;
};

struct server;
struct http_req;
struct push_blobs;
struct sync_job;
struct sync_boot_ctx;

/* Loop: a stored row lets an answer go (end false: the start row, for a
 * 202; end true: the end row, for a wait:true request). Set by whoever
 * started the job and waits for it (api/sync.c); NULL: nobody waits. */
typedef void (*sync_answer_fn)(struct sync_job *j, bool end);

struct sync_job {
    struct list link;
    struct server *srv;
    char id[27], space[64], peer_url[512], peer_space[64], direction[8], actor[32], remote[56];
    char *token;
    int64_t space_id;
    bool pull, push;                 /* the direction */
    enum sync_phase phase;           /* moved by sync_phase_set only */
    enum sync_status status;         /* moved by sync_end only */
    uint64_t pulled, pushed, conflicts, blobs, bytes, requests;
    /* items that could not be applied, both ways (the job ends "partial"
     * if it had any and nothing else went wrong), and the first of them */
    uint64_t errors;
    struct sync_err_item error_items[SYNC_ERROR_ITEMS];
    unsigned nerror_items;
    /* conflicts counts entities, not revisions: an entity that diverged is
     * usually seen by the pull here and again by the push there. The set
     * of "collection/id" keys seen (a jansson object: a hash table), plus
     * the conflicts of a peer that does not name its results' entities. */
    json_t *conflicted;
    uint64_t conflicts_unnamed;
    uint64_t started_at, finished_at;
    /* failed or partial: why (the "error" member and column; longer than a
     * struct err's message: a peer's URL is quoted in it), and the status a
     * wait:true request gets (see sync_end) */
    char error[300];
    int fail_status;
    /* peer */
    char peer_uid[27], peer_instance[27];
    uint64_t peer_version;
    /* checkpoints */
    uint64_t cp_pull, cp_push, pull_from, push_from, push_target;
    bool cp_loaded;
    bool force;                      /* "force": the checkpoints are not read: a full diff */
    char cp_pull_uid[27], cp_push_uid[27];
    int tries;
    uv_timer_t retry;
    bool retry_init;
    struct http_req *waiter;         /* wait=true: answered at the end */
    struct http_req *accepted;       /* 202 to send once the first row is stored */
    sync_answer_fn answer;
    uint64_t page_cp;                /* the push page in flight ends at this version */
    bool page_more;
    uint64_t push_sent;              /* the peer acknowledged our changes up to here (cp_push may lag) */
    /* the next push page, read (and its blobs sent) while the peer applies
     * the current one */
    enum sync_readahead ra;
    struct push_blobs *pre;          /* ra == SYNC_RA_READY: ready to send */
    bool pre_wanted;                 /* sync_step() is waiting for it */
    uint64_t pre_since;              /* ra == SYNC_RA_END: where the read found the end */
    uint64_t pre_from;               /* where that read started (the end of the page then in flight) */
    int cp_pending;                  /* push checkpoints on their way to the writer: keep the job */
    int rows_pending;                /* row writes not yet committed: keep the job */
    bool row_saved;                  /* the start row went to the writer (see sync_save_start_row) */
    char peer_name[64];              /* started for a persistent peer, or "" */
    /* pull pipeline (see struct pull_page) */
    uint64_t fetch_since;            /* since= of the next page to fetch */
    bool fetch_more;                 /* the peer has changes after fetch_since */
    bool fetch_blocked;              /* the next page's start is known once the last one is parsed */
    bool fetching;                   /* a GET in flight */
    int page_limit;                  /* limit= of the next page */
    int held;                        /* pages fetched or being fetched, not yet applied */
    int pipeline;                    /* fetches, parses and writer ops outstanding: the job stays */
    uint64_t seq_next, seq_submit;   /* page numbers: the next fetched, the next for the writer */
    struct list ready;               /* parsed pages waiting for their turn */
    char pull_error[300];            /* set: no more fetches; finish when the pipeline drains */
    int pull_status;                 /* with pull_error: see sync_end() */
    /* bootstrap (sync_bootstrap.c) */
    enum sync_boot boot;
    char boot_reason[200];           /* SKIPPED: why the job pulled instead */
    struct sync_boot_pick boot_snap; /* the snapshot taken (id "" until picked) */
    uint64_t boot_entities, boot_tombstones;  /* applied from the file, and tombstones fetched */
    struct sync_boot_ctx *boot_ctx;  /* its file, reader and pages while the phase runs */
};

/* ---- names (for JSON, SQL, SSE and metrics) ---- */

const char *sync_status_name(enum sync_status s);
const char *sync_phase_name(enum sync_phase p);
/* Has a job with this status ended (it never changes again)? */
bool sync_status_terminal(enum sync_status s);

/* ---- the state machine ---- */

/* A job of direction "pull", "push" or "both" (anything else is "both"),
 * running, in the status phase. Only the state: the caller fills the rest. */
void sync_job_state_init(struct sync_job *j, const char *direction);
static inline bool sync_running(const struct sync_job *j) { return j->status == SYNC_RUNNING; }
/* Is from -> to a move a job makes? (done -> done is: ending sets it.) */
bool sync_phase_legal(enum sync_phase from, enum sync_phase to);
/* Moves the phase (asserts the move is legal and the job running). */
void sync_phase_set(struct sync_job *j, enum sync_phase to);
/* The phase after the status phase, and after the pull. */
enum sync_phase sync_phase_after_status(const struct sync_job *j);
enum sync_phase sync_phase_after_pull(const struct sync_job *j);
/* Ends the job's state: failed with error (http: what a wait:true request
 * gets: 502 the peer failed or refused, 504 it did not answer in time, 503
 * this server is shutting down or overloaded, 500 (also for 0) a local
 * failure) when error is not NULL; else partial (502) if some items could
 * not be applied, completed if not. The phase of a failed job stays; a job
 * that ran to its end is done. false if the job had ended already. */
bool sync_end(struct sync_job *j, int http, const char *error);

/* ---- decisions ---- */

/* After the peer's status and the stored checkpoints: a checkpoint from
 * another incarnation of the peer's space, or past what the peer has now,
 * is dropped; the starting points and targets are set, and the phase moves
 * on. local_version: our space's version now. Returns whether the job has
 * anything to do (else its row waits for its end). */
bool sync_checkpoints_settle(struct sync_job *j, uint64_t local_version);
/* The peer acknowledged a push page; before/after: its version_before and
 * server_version. Returns the version the pull checkpoint may move to (its
 * new versions are all ours), or 0. */
uint64_t sync_push_pull_to(const struct sync_job *j, uint64_t before, uint64_t after);
/* Is a failed peer request worth a retry? (status 0: no response) */
bool sync_peer_transient(int status, bool transport_error, bool timed_out);
/* Progress for events, 0 to 100 (100 only once done). */
int sync_percent(const struct sync_job *j);
/* Reads ,"last_version":N,"more":B} off the end of a changes page without
 * parsing it. false when the end has any other shape. */
bool sync_tail_scan(const char *raw, size_t len, uint64_t *last, bool *more);

/* The bootstrap's first decision, before asking the peer anything:
 * NULL when it may go on, else why the job pulls instead (local_version:
 * our space's version now; a space that was ever written is not empty). */
const char *sync_boot_precheck(const struct sync_job *j, uint64_t local_version);
/* The snapshot to take from the peer's GET /snapshots?status=completed
 * answer (newest first): the first completed one that is not marked
 * corrupt, was taken here (not imported: its versions are another
 * space's), holds something and is not past the peer's server_version
 * (a restore or import replaced the data since). 1 with out filled, 0 with
 * why (none fits), -1 with why (the answer is not snapsync's). */
int sync_boot_pick(const char *list, size_t len, uint64_t peer_version, struct sync_boot_pick *out, char *why,
                   size_t whycap);
/* The phase's end: records the outcome (reason for SKIPPED), moves to the pull. */
void sync_boot_end(struct sync_job *j, enum sync_boot outcome, const char *reason);
/* "bootstrap" member of the job: null, or {"status","snapshot","server_version","entities","tombstones","reason"} */
void sync_boot_json(struct buf *b, const struct sync_job *j);

/* ---- what it met ---- */

/* One more item that could not be applied (the caller counts it in
 * j->errors); the first SYNC_ERROR_ITEMS are described. */
void sync_error_item_add(struct sync_job *j, const char *direction, const char *collection, const char *id,
                         const char *code, const char *message);
/* An entity diverged (collection/id); NULL: one the peer did not name. */
void sync_conflict_seen(struct sync_job *j, const char *collection, const char *id);

/* ---- JSON ---- */

/* [{"direction","collection","id","error","message"}...] */
void sync_error_items_json(struct buf *b, const struct sync_job *j);
/* The job as GET /sync/jobs/{id} shows it. */
void sync_job_json(struct buf *b, const struct sync_job *j);

#endif
