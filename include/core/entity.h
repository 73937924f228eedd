/* entity.h - the entity model: canonical bodies, revs and the
 * space digest. Pure functions, any thread.
 *
 * Canonical body: the client's JSON object parsed, keys sorted, minified
 * (jansson JSON_COMPACT | JSON_SORT_KEYS, reals as %.17g). It is what is
 * stored, hashed, streamed in feeds and snapshots, and compared, so the same
 * content always has the same bytes.
 *
 * Rev "N-h": N the edit count, h 16 hex digits of
 *   sha256(parent_rev "\n" deleted "\n" canonical_body)
 * so one edit applied twice to the same parent gives the same rev.
 *
 * Digest: XOR of sha256(collection \0 id \0 rev \0 deleted) over every
 * entity of a space. Each (collection, id) counts once, so XOR is order-
 * independent and updated in O(1): remove the old item, add the new one.
 */
#ifndef SNAPSYNC_ENTITY_H
#define SNAPSYNC_ENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

#define REV_MAX 40                 /* "N-" + 16 hex + NUL, N up to 20 digits */
/* The largest edit count N a rev may have: 2^53 - 1, the largest integer a
 * JavaScript number holds exactly, so a client that reads N as a number
 * orders revs right. A rev with a larger N (or N written with a leading
 * zero) is malformed wherever it comes from: a base_rev, a /replicate rev,
 * its history, a conflict record, a pulled page. Nothing can wrap: an edit
 * that would take an entity past it is refused (rev_make). No entity gets
 * there by editing (9 * 10^15 edits); only a rev made up elsewhere can. */
#define REV_N_MAX 9007199254740991ULL
#define REV_HISTORY 64             /* revs kept per entity (SPEC: at least 50) */

/* Parses text and returns its canonical form (malloc'd, *out_len bytes,
 * NUL-terminated), or NULL with err filled. want_object: the top level must
 * be an object. */
char *entity_canonical(const char *text, size_t len, bool want_object, size_t *out_len, struct json_err *err);
/* Canonical text of an already parsed value, or NULL with err. */
char *entity_canonical_value(const json_t *v, size_t *out_len, struct json_err *err);

/* Makes the rev that follows parent (NULL for a first write). Returns 0, or
 * -1 when parent's N is REV_N_MAX already (the edit cannot be counted: the
 * caller refuses it, 422 rev_exhausted); out is then "". */
int rev_make(const char *parent, bool deleted, const char *body, size_t len, char out[REV_MAX]);
/* The history a row keeps after an edit of a row at rev with history old
 * (space-separated, newest first): rev in front, capped at REV_HISTORY - 1. */
void rev_history_push(char *out, size_t cap, const char *rev, const char *old);
/* Appends an entity's revs as the JSON array GET /changes?style=all_revs
 * gives: rev, then its stored history (space-separated, newest first). */
void rev_history_json(struct buf *b, const char *rev, const char *hist);
/* Splits "N-h": N from 1 to REV_N_MAX without leading zeros, h 1 to 64
 * lower-case hex digits. Returns 0, or -1 if rev is malformed. */
int rev_parse(const char *rev, uint64_t *n, const char **hash);
/* Orders two revs by the winner rule (docs/sync.md): higher N, then higher hash.
 * (Live-beats-deleted is the caller's first criterion.) <0, 0, >0. */
int rev_cmp(const char *a, const char *b);
bool rev_valid(const char *rev);

/* Replication: what to do with a revision made elsewhere. */
enum rep_action {
    REP_INSERT,          /* nothing here yet: take it */
    REP_IGNORE,          /* already known (current or in our history) */
    REP_FASTFORWARD,     /* a descendant of ours: take it */
    REP_LOCAL_WINS,      /* divergent, ours wins: keep theirs as a conflict */
    REP_REMOTE_WINS,     /* divergent, theirs wins: take it, keep ours as a conflict */
};
/* local_rev NULL when absent. Histories: space-separated revs, newest first
 * (not including the current rev). Deterministic: every instance decides
 * the same winner for the same pair, in whatever order syncs happen. */
enum rep_action rep_decide(const char *local_rev, bool local_deleted, const char *local_hist, const char *in_rev,
                           bool in_deleted, const char *in_hist);
/* The winner rule alone: live beats deleted, then higher N, then higher
 * hash. >0 if a wins. */
int rev_winner(const char *a, bool a_deleted, const char *b, bool b_deleted);
/* Is rev one of the space-separated revs in hist? */
bool rev_in_history(const char *hist, const char *rev);

struct digest { uint8_t b[32]; };
void digest_item(struct digest *out, const char *collection, const char *id, const char *rev, bool deleted);
void digest_xor(struct digest *acc, const struct digest *item);
void digest_hex(const struct digest *d, char out[65]);
int digest_from_hex(struct digest *d, const char *hex);

/* Writes an entity row as the JSON of docs/api.md (Entities). body may be NULL (tombstone). */
void entity_json(struct buf *b, const char *coll, const char *id, const char *rev, uint64_t version,
                 uint64_t created, uint64_t updated, bool deleted, const char *body, size_t body_len);

#endif
