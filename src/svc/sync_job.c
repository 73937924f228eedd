/* sync_job.c - a sync job's state machine and the decisions that need no
 * network, loop nor server (see sync_job.h). The engine that runs jobs is
 * sync.c.
 */
#include "svc/sync_job.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "core/names.h"

static const char *const status_names[] = {
    [SYNC_RUNNING] = "running",
    [SYNC_COMPLETED] = "completed",
    [SYNC_PARTIAL] = "partial",
    [SYNC_FAILED] = "failed",
};

static const char *const phase_names[] = {
    [SYNC_PHASE_STATUS] = "status",
    [SYNC_PHASE_BOOTSTRAP] = "bootstrap",
    [SYNC_PHASE_PULL] = "pull",
    [SYNC_PHASE_PUSH] = "push",
    [SYNC_PHASE_DONE] = "done",
};

const char *sync_status_name(enum sync_status s)
{
    assert((unsigned)s < sizeof status_names / sizeof status_names[0]);
    return status_names[s];
}

const char *sync_phase_name(enum sync_phase p)
{
    assert((unsigned)p < sizeof phase_names / sizeof phase_names[0]);
    return phase_names[p];
}

bool sync_status_terminal(enum sync_status s)
{
    return s != SYNC_RUNNING;
}

void sync_job_state_init(struct sync_job *j, const char *direction)
{
    snprintf(j->direction, sizeof j->direction, "%s", direction);
    j->pull = strcmp(direction, "push") != 0;
    j->push = strcmp(direction, "pull") != 0;
    j->phase = SYNC_PHASE_STATUS;
    j->status = SYNC_RUNNING;
    j->ra = SYNC_RA_NONE;
    list_init(&j->ready);
}

bool sync_phase_legal(enum sync_phase from, enum sync_phase to)
{
    switch (from) {
    case SYNC_PHASE_STATUS: return to == SYNC_PHASE_BOOTSTRAP || to == SYNC_PHASE_PULL || to == SYNC_PHASE_PUSH;
    /* a bootstrap always ends in the pull: after the snapshot, or instead of it */
    case SYNC_PHASE_BOOTSTRAP: return to == SYNC_PHASE_PULL;
    case SYNC_PHASE_PULL: return to == SYNC_PHASE_PUSH || to == SYNC_PHASE_DONE;
    case SYNC_PHASE_PUSH: return to == SYNC_PHASE_DONE;
    case SYNC_PHASE_DONE: return to == SYNC_PHASE_DONE;
    }
    return false;
}

void sync_phase_set(struct sync_job *j, enum sync_phase to)
{
    assert(j->status == SYNC_RUNNING);
    assert(sync_phase_legal(j->phase, to));
    /* a direction that does not push never enters the push, and the other
     * way round */
    assert(to != SYNC_PHASE_PULL || j->pull);
    assert(to != SYNC_PHASE_BOOTSTRAP || (j->pull && j->boot == SYNC_BOOT_PENDING));
    assert(to != SYNC_PHASE_PUSH || j->push);
    j->phase = to;
}

enum sync_phase sync_phase_after_status(const struct sync_job *j)
{
    if (j->pull && j->boot == SYNC_BOOT_PENDING) return SYNC_PHASE_BOOTSTRAP;
    return j->pull ? SYNC_PHASE_PULL : SYNC_PHASE_PUSH;
}

enum sync_phase sync_phase_after_pull(const struct sync_job *j)
{
    return j->push ? SYNC_PHASE_PUSH : SYNC_PHASE_DONE;
}

/* "completed" says that everything was applied, ignored as known, or kept
 * as a conflict: a job that ran to its end but could not apply some of the
 * items it was sent ends "partial", with 502 for a wait:true request. */
bool sync_end(struct sync_job *j, int http, const char *error)
{
    if (j->status != SYNC_RUNNING) return false;        /* finished already */
    if (error) {
        j->fail_status = http ? http : 500;
        snprintf(j->error, sizeof j->error, "%s", error);
        j->status = SYNC_FAILED;
        return true;
    }
    /* only a job with nothing left to do ends without an error */
    sync_phase_set(j, SYNC_PHASE_DONE);
    if (j->errors) {
        j->fail_status = 502;
        snprintf(j->error, sizeof j->error, "%llu item%s could not be applied; error_items describes %s",
                 (unsigned long long)j->errors, j->errors == 1 ? "" : "s",
                 j->errors == 1 ? "it" : j->errors > SYNC_ERROR_ITEMS ? "the first ones" : "them");
        j->status = SYNC_PARTIAL;
    } else {
        j->status = SYNC_COMPLETED;
    }
    return true;
}

bool sync_checkpoints_settle(struct sync_job *j, uint64_t local_version)
{
    assert(j->phase == SYNC_PHASE_STATUS && j->cp_loaded && j->peer_uid[0]);
    /* a checkpoint from another incarnation of the peer's space, or one
     * past what the peer has now (its data was replaced), is dropped */
    if (strcmp(j->cp_pull_uid, j->peer_uid) || j->cp_pull > j->peer_version) j->cp_pull = 0;
    /* cp_pull (perhaps just reset to 0) is now a position in this
     * incarnation of the peer's space: a push that follows may move it
     * past our own changes (on_push_sent), even when the pull had
     * nothing to fetch and so stored no checkpoint of its own */
    snprintf(j->cp_pull_uid, sizeof j->cp_pull_uid, "%s", j->peer_uid);
    if (strcmp(j->cp_push_uid, j->peer_uid)) j->cp_push = 0;
    j->pull_from = j->cp_pull;
    j->push_from = j->cp_push;
    j->push_sent = j->cp_push;
    j->push_target = local_version;
    sync_phase_set(j, sync_phase_after_status(j));
    j->fetch_since = j->cp_pull;
    j->fetch_more = j->cp_pull < j->peer_version;     /* nothing new there: no request */
    return (j->pull && j->fetch_more) || (j->push && j->push_target > j->cp_push);
}

/* nothing else happened on the peer since our pull: its new versions are
 * all ours, and the next pull may start after them */
uint64_t sync_push_pull_to(const struct sync_job *j, uint64_t before, uint64_t after)
{
    return (j->pull || j->cp_pull_uid[0]) && before == j->cp_pull && !strcmp(j->cp_pull_uid, j->peer_uid) ? after
                                                                                                          : 0;
}

bool sync_peer_transient(int status, bool transport_error, bool timed_out)
{
    /* a peer that did not answer within the timeout is not retried: a frozen
     * or overloaded peer would otherwise hold the job for minutes */
    if (timed_out) return false;
    return transport_error || status == 429 || status == 502 || status == 503 || status == 504 || status == 500;
}

int sync_percent(const struct sync_job *j)
{
    if (j->phase == SYNC_PHASE_DONE) return 100;
    double p = 0, parts = 0;
    if (j->pull) {
        parts++;
        uint64_t span = j->peer_version > j->pull_from ? j->peer_version - j->pull_from : 0;
        double part = span ? (double)(j->cp_pull - j->pull_from) / (double)span
                           : (j->phase > SYNC_PHASE_PULL ? 1.0 : 0.0);
        /* while the snapshot applies, its share of the versions to pull */
        if (j->phase == SYNC_PHASE_BOOTSTRAP && span && j->boot_snap.entity_total)
            part = (double)j->boot_entities / (double)j->boot_snap.entity_total *
                   (double)(j->boot_snap.server_version - j->pull_from) / (double)span;
        p += part > 1.0 ? 1.0 : part;    /* a push may move the pull checkpoint past the start's target */
    }
    if (j->push) {
        parts++;
        uint64_t span = j->push_target > j->push_from ? j->push_target - j->push_from : 0;
        p += j->phase == SYNC_PHASE_PUSH && span ? (double)(j->push_sent - j->push_from) / (double)span : 0.0;
    }
    int pct = parts ? (int)(p / parts * 100.0) : 0;
    return pct > 99 ? 99 : pct < 0 ? 0 : pct;
}

/* Reads ,"last_version":N,"more":B} off the end of a page (the shape
 * changes_work writes) without parsing the page, so the next page can be
 * fetched while this one is parsed. Anything else: false, and the caller
 * waits for the parse. The parse checks what was read here. */
bool sync_tail_scan(const char *raw, size_t len, uint64_t *last, bool *more)
{
    static const char key[] = "\"last_version\":";
    size_t from = len > 96 ? len - 96 : 0;
    const char *p = NULL;
    for (size_t i = len >= sizeof key - 1 ? len - (sizeof key - 1) + 1 : 0; i-- > from;)
        if (!memcmp(raw + i, key, sizeof key - 1)) { p = raw + i + sizeof key - 1; break; }
    if (!p) return false;
    const char *end = raw + len;
    uint64_t v = 0;
    const char *d = p;
    while (d < end && *d >= '0' && *d <= '9' && d - p < 19) v = v * 10 + (uint64_t)(*d++ - '0');
    if (d == p) return false;
    static const char t[] = ",\"more\":true}", f[] = ",\"more\":false}";
    size_t rest = (size_t)(end - d);
    if (rest == sizeof t - 1 && !memcmp(d, t, rest)) *more = true;
    else if (rest == sizeof f - 1 && !memcmp(d, f, rest)) *more = false;
    else return false;
    *last = v;
    return true;
}

/* Names that are not valid names (a peer's answer is not trusted) are left
 * out. */
void sync_error_item_add(struct sync_job *j, const char *direction, const char *collection, const char *id,
                         const char *code, const char *message)
{
    if (j->nerror_items == SYNC_ERROR_ITEMS) return;
    struct sync_err_item *e = &j->error_items[j->nerror_items++];
    memset(e, 0, sizeof *e);
    snprintf(e->direction, sizeof e->direction, "%s", direction);
    if (collection && id && name_collection_valid(collection, strlen(collection)) &&
        name_entity_id_valid(id, strlen(id))) {
        snprintf(e->collection, sizeof e->collection, "%s", collection);
        snprintf(e->id, sizeof e->id, "%s", id);
    }
    snprintf(e->error, sizeof e->error, "%s", code && *code ? code : "error");
    snprintf(e->message, sizeof e->message, "%s", message ? message : "");
}

void sync_conflict_seen(struct sync_job *j, const char *collection, const char *id)
{
    if (collection && id) {
        char key[200];
        snprintf(key, sizeof key, "%s/%s", collection, id);
        if (!j->conflicted) j->conflicted = json_object();
        json_object_set_new(j->conflicted, key, json_true());
    } else {
        j->conflicts_unnamed++;
    }
    j->conflicts = json_object_size(j->conflicted) + j->conflicts_unnamed;
}

void sync_error_items_json(struct buf *b, const struct sync_job *j)
{
    buf_putc(b, '[');
    for (unsigned i = 0; i < j->nerror_items; i++) {
        const struct sync_err_item *e = &j->error_items[i];
        if (i) buf_putc(b, ',');
        buf_putc(b, '{');
        json_kv_str(b, "direction", e->direction);
        json_kv_str(b, "collection", e->collection[0] ? e->collection : NULL);
        json_kv_str(b, "id", e->id[0] ? e->id : NULL);
        json_kv_str(b, "error", e->error);
        json_kv_str(b, "message", e->message);
        buf_putc(b, '}');
    }
    buf_putc(b, ']');
}

void sync_job_json(struct buf *b, const struct sync_job *j)
{
    buf_puts(b, "{\"id\":");
    json_cstr(b, j->id);
    json_kv_str(b, "space", j->space);
    json_kv_str(b, "peer_url", j->peer_url);
    json_kv_str(b, "peer_space", j->peer_space);
    json_kv_str(b, "direction", j->direction);
    json_kv_str(b, "status", sync_status_name(j->status));
    json_kv_str(b, "phase", sync_phase_name(j->phase));
    json_kv_u64(b, "pulled", j->pulled);
    json_kv_u64(b, "pushed", j->pushed);
    json_kv_u64(b, "conflicts", j->conflicts);
    json_kv_u64(b, "blobs", j->blobs);
    json_kv_u64(b, "bytes", j->bytes);
    json_kv_u64(b, "requests", j->requests);
    json_kv_time(b, "started_at", j->started_at);
    json_kv_time(b, "finished_at", j->finished_at);
    json_kv_str(b, "error", j->error[0] ? j->error : NULL);
    json_kv_u64(b, "errors", j->errors);
    json_key(b, "error_items");
    sync_error_items_json(b, j);
    json_key(b, "bootstrap");
    sync_boot_json(b, j);
    buf_putc(b, '}');
}

/* ---- bootstrap decisions ------------------------------------------------- */

const char *sync_boot_precheck(const struct sync_job *j, uint64_t local_version)
{
    /* Snapshot lines are applied as the peer's revisions, with no check
     * against a local state: only a space nothing was ever written to (no
     * entity, no tombstone, version 0) can take them without losing an
     * edit; and a space that was written has what a pull needs anyway. */
    if (local_version) return "the local space is not empty: a bootstrap only starts an empty space";
    if (!j->peer_version) return "the peer's space is empty";
    if (j->cp_pull) return "a pull checkpoint for this peer exists";
    return NULL;
}

int sync_boot_pick(const char *list, size_t len, uint64_t peer_version, struct sync_boot_pick *out, char *why,
                   size_t whycap)
{
    json_error_t je;
    json_t *v = json_loadb(list ? list : "", len, 0, &je);
    json_t *arr = json_object_get(v, "snapshots");
    if (!json_is_array(arr)) {
        json_decref(v);
        snprintf(why, whycap, "the peer's snapshot list is not snapsync's");
        return -1;
    }
    size_t i;
    json_t *s;
    int found = 0;
    unsigned seen = 0;
    json_array_foreach(arr, i, s) {
        const char *id = json_name(json_object_get(s, "id"));
        const char *st = json_name(json_object_get(s, "status"));
        const char *kind = json_name(json_object_get(s, "kind"));
        const char *integ = json_name(json_object_get(s, "integrity"));
        const char *sha = json_name(json_object_get(s, "sha256"));
        json_t *ver = json_object_get(s, "server_version"), *size = json_object_get(s, "size_bytes");
        json_t *tot = json_object_get(s, "entity_total");
        if (!id || !st || strcmp(st, "completed")) continue;
        seen++;
        if (strlen(id) != 26 || !sha || strlen(sha) != 64 || !json_is_integer(ver) || !json_is_integer(size)) continue;
        if (kind && !strcmp(kind, "imported")) continue;      /* another space's versions */
        if (integ && !strcmp(integ, "corrupt")) continue;
        uint64_t sv = (uint64_t)json_integer_value(ver);
        if (!sv || sv > peer_version) continue;
        snprintf(out->id, sizeof out->id, "%s", id);
        snprintf(out->sha256, sizeof out->sha256, "%s", sha);
        out->server_version = sv;
        out->size_bytes = (uint64_t)json_integer_value(size);
        out->entity_total = json_is_integer(tot) ? (uint64_t)json_integer_value(tot) : 0;
        found = 1;
        break;
    }
    if (!found)
        snprintf(why, whycap, seen ? "none of the peer's %u completed snapshots can start this space (imported, "
                 "corrupt, empty or past its data)" : "the peer has no completed snapshot of the space", seen);
    json_decref(v);
    return found;
}

void sync_boot_end(struct sync_job *j, enum sync_boot outcome, const char *reason)
{
    assert(j->phase == SYNC_PHASE_BOOTSTRAP && j->boot == SYNC_BOOT_PENDING);
    j->boot = outcome;
    snprintf(j->boot_reason, sizeof j->boot_reason, "%s", outcome == SYNC_BOOT_SKIPPED && reason ? reason : "");
    sync_phase_set(j, SYNC_PHASE_PULL);
}

void sync_boot_json(struct buf *b, const struct sync_job *j)
{
    if (j->boot == SYNC_BOOT_OFF) {
        buf_puts(b, "null");
        return;
    }
    static const char *const names[] = {"off", "running", "applied", "skipped"};
    buf_puts(b, "{\"status\":");
    json_cstr(b, names[j->boot]);
    json_kv_str(b, "snapshot", j->boot_snap.id[0] ? j->boot_snap.id : NULL);
    if (j->boot_snap.id[0]) json_kv_u64(b, "server_version", j->boot_snap.server_version);
    else json_kv_null(b, "server_version");
    json_kv_u64(b, "entities", j->boot_entities);
    json_kv_u64(b, "tombstones", j->boot_tombstones);
    json_kv_str(b, "reason", j->boot_reason[0] ? j->boot_reason : NULL);
    buf_putc(b, '}');
}
