/* replicate.h - replication: revisions made on another instance, applied
 * with their history. Used by POST /replicate (api/sync.c) and by the
 * pages a sync job pulls (svc/sync_pull.c).
 *
 * Two halves: rep_batch_parse() (rep_parse.c) checks and canonicalizes a
 * batch on any thread but the loop (the threadpool in practice);
 * rep_apply_batch() (replicate.c) runs on the writer thread and decides
 * each entity by the winner rule (rep_decide() in core/entity.h).
 * rep_result_status() is pure.
 */
#ifndef SNAPSYNC_REPLICATE_H
#define SNAPSYNC_REPLICATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/entity.h"
#include "core/json.h"
#include "core/util.h"

struct wtx;
struct wop;
struct space_stats;

/* The top-level members a /replicate body may hold (NULL-terminated). */
extern const char *const rep_members[];

struct rep_counts {
    uint64_t applied, ignored, conflicts, errors;
};

/* One replicated revision, checked and canonicalized off the writer
 * thread. Strings at *_off live in the batch's text (NUL-terminated). */
struct rep_item {
    const char *err_code;            /* why it cannot apply: a code (invalid_rev, too_deep, ...), or NULL */
    const char *err;                 /* and in words (static text) */
    char collection[64], id[129], rev[REV_MAX];
    bool deleted, has_body;
    size_t hist_off;                 /* earlier revs, newest first, space-separated */
    size_t body_off, body_len;       /* canonical body */
    uint32_t conf_first, nconf;      /* conflict records that travel with it: confs[conf_first..] */
    bool conflicted;                 /* rep_apply_batch: it diverged from the local revision */
};

struct rep_conf {
    char rev[REV_MAX];
    bool deleted, has_body;
    size_t body_off, body_len;
};

/* A parsed /replicate body or /changes?style=all_revs page. */
struct rep_batch {
    struct rep_item *items;
    size_t n;
    struct rep_conf *confs;
    size_t nconfs, capconfs;
    struct buf text;
    char (*blobs)[65];               /* distinct valid "_blobs" hashes of live bodies */
    size_t nblobs;
    bool has_last, more;             /* a page's "last_version" and "more" */
    uint64_t last_version;
    char source_instance[27];        /* "source_instance" when it is an instance id, else "" */
    char unknown[64];                /* the first top-level member that is none of the above, or "" */
};

/* Any thread but the loop: parses raw ({"entities":[...]} or {"changes":
 * [...]}) into b. Returns 0, or -1 with err filled (the whole text is
 * refused: invalid JSON, duplicate keys, too deep, no array); a bad entity
 * is not a failure but an item with err set. b is always safe to free. */
int rep_batch_parse(struct rep_batch *b, const char *raw, size_t len, struct json_err *err);
void rep_batch_free(struct rep_batch *b);
/* Writer thread: applies a batch (see replicate.c); marks the items that
 * diverged (conflicted). Fills cnt and, if out is not NULL, one result
 * object per entity, comma-separated. -1: the op failed (the batch rolls
 * back). */
int rep_apply_batch(struct wtx *tx, struct wop *op, struct space_stats *sp, struct rep_batch *batch,
                    const char *origin, struct rep_counts *cnt, struct buf *out);

/* Any thread: the result status of an entity the rule decided: "applied"
 * (insert, fast-forward), "ignored" (known) or "conflict" (a divergence
 * settled by the winner rule, the loser kept as a conflict record). */
static inline const char *rep_result_status(enum rep_action act)
{
    switch (act) {
    case REP_INSERT:
    case REP_FASTFORWARD: return "applied";
    case REP_LOCAL_WINS:
    case REP_REMOTE_WINS: return "conflict";
    case REP_IGNORE: break;
    }
    return "ignored";
}
/* Any thread: did the decision settle a divergence? */
static inline bool rep_action_conflicts(enum rep_action act)
{
    return act == REP_REMOTE_WINS || act == REP_LOCAL_WINS;
}

#endif
