/* sync_int.h - what the files of the sync engine share (sync.c, the job's
 * life and its state machine; sync_pull.c; sync_push.c). Not for other
 * modules: they use sync.h and sync_job.h.
 *
 * Threads: loop thread unless noted (checkpoint_save: writer thread).
 */
#ifndef SNAPSYNC_SYNC_INT_H
#define SNAPSYNC_SYNC_INT_H

#include <stdarg.h>

#include "net/peer.h"
#include "svc/sync.h"

struct wtx;

#define SYNC_PAGE 1000
#define SYNC_PAGES_HELD 3            /* pull: pages fetched or being fetched, not yet applied */
#define SYNC_FIRST_PAGE 250          /* pull: the first page of a job; each next one twice as big, up to SYNC_PAGE */
#define SYNC_TIMEOUT_MS 30000
#define SYNC_RETRIES 3

/* sync.c */

/* The state machine's next move (a no-op once the job has ended). */
void sync_step(struct sync_job *j);
/* Ends the job: completed (error_fmt NULL), or failed with that error (see
 * sync_end for http); stores its row and answers who waits once stored. */
void sync_finish(struct sync_job *j, int http, const char *error_fmt, ...) PRINTF_LIKE(3, 4);
/* A `sync` event with the job's progress. */
void sync_publish(struct sync_job *j);
/* The start row, once (see save_start_row in sync.c). */
void sync_save_start_row(struct sync_job *j);
/* Sends a request to the peer space (tail after /api/v1/spaces/{space});
 * 0, or -1 when it could not start: the job is finished with that error
 * if finish_on_fail. */
int sync_send_peer(struct sync_job *j, const char *method, const char *tail, const char *body, size_t len, peer_cb cb,
                   bool finish_on_fail);
/* Says why a peer request failed, for the job's error. */
void sync_peer_explain(const struct sync_job *j, const struct peer_result *res, const char *what, char *out,
                       size_t cap);
/* What a wait:true request gets for a failed peer request (see sync_end). */
int sync_peer_fail_status(const struct sync_job *j, const struct peer_result *res);
/* Explains a failed peer request, or retries a transient failure with
 * backoff. Returns true when the job goes on (retry scheduled). */
bool sync_peer_failed(struct sync_job *j, const struct peer_result *res, const char *what);
static inline bool sync_retry_waiting(const struct sync_job *j)
{
    return j->retry_init && uv_is_active((const uv_handle_t *)&j->retry);
}
/* A transfer's in fields for this job. */
void sync_xfer_init(struct blob_xfer *x, const struct sync_job *j);
/* Writer thread: moves a checkpoint, in the caller's transaction. */
int sync_checkpoint_save(struct wtx *tx, int64_t space_id, const char *url, const char *pspace, const char *dir,
                         const char *uid, uint64_t version);
extern const char SYNC_SQL_CHECKPOINT_GET[];

/* Frees a job nothing refers to any more. */
void sync_job_free(struct sync_job *x);
/* Forgets the finished jobs of a space that is gone. */
void sync_forget_space_jobs(struct sync_ctx *sc, const char *space);

/* sync_pull.c */

/* Moves the pull along (also after a retry's wait). */
void sync_pull_pump(struct sync_job *j);
/* Stops the pull: no more fetches; the job finishes with this error once
 * the pages already on their way are done with. */
void sync_pull_stop(struct sync_job *j, int http, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* sync_bootstrap.c */

/* The bootstrap phase's step (also after a retry's wait, and at shutdown). */
void sync_boot_step(struct sync_job *j);
void sync_boot_discard(struct sync_job *j);     /* after the loop: what a phase still holds */

/* sync_push.c */

/* The push phase's step: the next page, or the end. */
void sync_push_step(struct sync_job *j);
/* Drops a read-ahead page (the job ends). */
void sync_push_pre_free(struct sync_job *j);

#endif
