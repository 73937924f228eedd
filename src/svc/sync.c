/* sync.c - sync jobs (SPEC §9): pull from and/or push to a peer, with
 * per-(peer, peer space_uid, direction) checkpoints.
 *
 * A job is a small state machine on the loop thread; every step is a peer
 * request (peer.c) or a local read/write, never a blocking call:
 *   status   GET peer /sync/status: its space_uid and server_version
 *   pull     GET peer /changes?since=cp&style=all_revs in pages of 250,
 *            500, then 1,000, as a pipeline (struct pull_page): the next
 *            page is fetched while earlier ones are parsed on the
 *            threadpool and applied by the writer, at most SYNC_PAGES_HELD
 *            at once, applied in order; each page's writer op also advances
 *            the pull checkpoint in the same transaction, so a job killed
 *            at any moment resumes exactly after the last applied page
 *   push     local changes since the push checkpoint, leaving out the
 *            revisions that came from that peer, POSTed to its /replicate;
 *            the checkpoint advances once the peer accepted the page
 * A checkpoint whose peer space_uid differs, or that is past the peer's
 * server_version (its data was replaced), is dropped: a full diff runs.
 * A sync with nothing to do costs the one status request, and one commit
 * (its row with both audit records).
 * Progress goes out as SSE `sync` events; start and end are audited.
 */
#include "svc/sync.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>

#include "api/api.h"
#include "api/util.h"
#include "svc/blobs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/names.h"
#include "core/counters.h"
#include "net/peer.h"
#include "net/server.h"
#include "store/spaces.h"
#include "svc/sse.h"
#include "store/store.h"
#include "store/writer.h"

#define SYNC_PAGE 1000
#define SYNC_PAGES_HELD 3            /* pull: pages fetched or being fetched, not yet applied */
#define SYNC_FIRST_PAGE 250          /* pull: the first page of a job; each next one twice as big, up to SYNC_PAGE */
#define SYNC_TIMEOUT_MS 30000
#define SYNC_RETRIES 3
#define SYNC_KEEP 200                /* finished jobs kept in memory */
#define SYNC_ERROR_ITEMS 10          /* refused items a job describes (error_items); errors counts them all */

enum sync_phase { PH_STATUS, PH_PULL, PH_PUSH, PH_DONE };
static const char *const phase_names[] = {"status", "pull", "push", "done"};

/* An item the job sent or received that could not be applied: one the
 * peer's /replicate answered "error" for (push), or one our own apply
 * refused (pull). */
struct sync_err_item {
    char direction[8];               /* "pull": refused here, "push": refused by the peer */
    char collection[64], id[129];    /* "" when the refusal did not name a valid entity */
    char error[32], message[160];
};

struct sync_job {
    struct list link;
    struct server *srv;
    char id[27], space[64], peer_url[512], peer_space[64], direction[8], actor[32], remote[56];
    char *token;
    int64_t space_id;
    bool pull, push;
    enum sync_phase phase;
    char status[16];                 /* running, completed, partial, failed */
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
    char error[300];
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
    uint64_t page_cp;                /* the push page in flight ends at this version */
    bool page_more;
    uint64_t push_sent;              /* the peer acknowledged our changes up to here (cp_push may lag) */
    /* the next push page, read (and its blobs sent) while the peer applies
     * the current one */
    struct push_blobs *pre;          /* ready to send, or NULL */
    bool pre_busy;                   /* its read or blob job is out */
    bool pre_wanted;                 /* step() is waiting for it */
    bool pre_end;                    /* the read found nothing more: pre_since is the end */
    uint64_t pre_since;
    uint64_t pre_from;               /* where that read started (the end of the page then in flight) */
    int cp_pending;                  /* push checkpoints on their way to the writer: keep the job */
    int rows_pending;                /* row writes not yet committed: keep the job */
    bool row_saved;                  /* the start row went to the writer (see save_start_row) */
    struct http_req *accepted;       /* 202 to send once the first row is stored */
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
    int pull_status;                 /* with pull_error: see finish() */
    int fail_status;                 /* failed: the status a wait:true request gets (finish()) */
};

struct peer_def {
    struct list link;
    char space[64], name[64], url[512], peer_space[64], direction[8];
    char *token;
    int64_t space_id;
    uint64_t every_s, created_at;
    char last_job[27], last_status[16], last_error[300];
    uint64_t last_run_at, next_run_ms;   /* next_run: loop clock */
    unsigned failures;
    bool running;
};

/* A threadpool job that moves blobs: it blocks a pool thread for as long
 * as its transfers take, so at most blob_cap of them run at once (half the
 * pool, at least one) and the rest wait here, in order: database reads and
 * snapshots always find a thread. */
struct blob_wait {
    struct list link;
    struct job *job;
    job_work_fn work;
    job_done_fn done;
};

struct sync_ctx {
    struct list jobs;                /* newest last */
    size_t n;
    struct list blob_waiting;        /* struct blob_wait */
    unsigned blob_active, blob_cap;
    uint64_t blob_waited;            /* how many had to wait (metrics, tests) */
    struct list peers;               /* struct peer_def */
    uint64_t timeout_ms;             /* each peer request: SYNC_TIMEOUT_MS (a test hook may shorten it) */
    uv_timer_t tick;                 /* the peers' schedule */
    bool tick_on;
};

static void peer_job_finished(struct sync_job *j);

/* [{"direction","collection","id","error","message"}...]: the first
 * SYNC_ERROR_ITEMS items the job could not apply */
static void error_items_json(struct buf *b, const struct sync_job *j)
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

/* One more item that could not be applied (counted in j->errors by the
 * caller); the first few are described. Names that are not valid names
 * (a peer's answer is not trusted) are left out. */
static void error_item_add(struct sync_job *j, const char *direction, const char *collection, const char *id,
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

static void job_json(struct buf *b, const struct sync_job *j)
{
    buf_puts(b, "{\"id\":");
    json_cstr(b, j->id);
    json_kv_str(b, "space", j->space);
    json_kv_str(b, "peer_url", j->peer_url);
    json_kv_str(b, "peer_space", j->peer_space);
    json_kv_str(b, "direction", j->direction);
    json_kv_str(b, "status", j->status);
    json_kv_str(b, "phase", phase_names[j->phase]);
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
    error_items_json(b, j);
    buf_putc(b, '}');
}

static int percent(const struct sync_job *j)
{
    if (j->phase == PH_DONE) return 100;
    double p = 0, parts = 0;
    if (j->pull) {
        parts++;
        uint64_t span = j->peer_version > j->pull_from ? j->peer_version - j->pull_from : 0;
        double part = span ? (double)(j->cp_pull - j->pull_from) / (double)span : (j->phase > PH_PULL ? 1.0 : 0.0);
        p += part > 1.0 ? 1.0 : part;    /* a push may move the pull checkpoint past the start's target */
    }
    if (j->push) {
        parts++;
        uint64_t span = j->push_target > j->push_from ? j->push_target - j->push_from : 0;
        p += j->phase == PH_PUSH && span ? (double)(j->push_sent - j->push_from) / (double)span : 0.0;
    }
    int pct = parts ? (int)(p / parts * 100.0) : 0;
    return pct > 99 ? 99 : pct < 0 ? 0 : pct;
}

static void publish(struct sync_job *j)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"space\":");
    json_cstr(&b, j->space);
    json_kv_str(&b, "job", j->id);
    json_kv_str(&b, "peer", j->peer_url);
    json_kv_str(&b, "phase", phase_names[j->phase]);
    json_kv_u64(&b, "pulled", j->pulled);
    json_kv_u64(&b, "pushed", j->pushed);
    json_kv_u64(&b, "conflicts", j->conflicts);
    json_kv_u64(&b, "percent", (uint64_t)percent(j));
    json_kv_str(&b, "status", j->status);
    if (j->error[0]) json_kv_str(&b, "error", j->error);
    json_kv_u64(&b, "errors", j->errors);
    json_key(&b, "error_items");
    error_items_json(&b, j);
    buf_putc(&b, '}');
    sse_publish(j->srv, SSE_SYNC, j->space, b.data, b.len);
    buf_free(&b);
}

/* ---- rows in the database ----------------------------------------------- */

struct job_row_op {
    struct wop op;
    struct sync_job snap;            /* a copy: the job may go on meanwhile */
    struct sync_job *job;            /* answered once the row is stored (row_pending holds it) */
    bool insert;                     /* the start row (sync.start) */
    bool finish;                     /* the end state (sync.finish); both: a job that wrote nothing else */
};

/* sync.start: the job and its direction; sync.finish: how it ended, with
 * what it could not apply (errors, error_items) */
static void audit_meta(const struct sync_job *j, bool fin, struct buf *meta)
{
    buf_putc(meta, '{');
    json_kv_str(meta, "job", j->id);
    json_kv_str(meta, "direction", j->direction);
    json_kv_str(meta, "status", fin ? j->status : "running");
    json_kv_u64(meta, "pulled", fin ? j->pulled : 0);
    json_kv_u64(meta, "pushed", fin ? j->pushed : 0);
    if (fin) {
        json_kv_u64(meta, "errors", j->errors);
        json_key(meta, "error_items");
        error_items_json(meta, j);
    }
    buf_putc(meta, '}');
}

static int job_row_apply(struct wtx *tx, struct wop *op)
{
    struct job_row_op *o = container_of(op, struct job_row_op, op);
    struct sync_job *j = &o->snap;
    sqlite3_stmt *st = wtx_stmt(tx,
                                "INSERT INTO sync_jobs(id, space, peer_url, peer_space, direction, status, phase, pulled,"
                                " pushed, conflicts, blobs, bytes, started_at, finished_at, error, created_by, errors,"
                                " error_items)"
                                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
                                " ON CONFLICT(id) DO UPDATE SET status = ?6, phase = ?7, pulled = ?8, pushed = ?9,"
                                " conflicts = ?10, blobs = ?11, bytes = ?12, finished_at = ?14, error = ?15,"
                                " errors = ?17, error_items = ?18");
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->space, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, j->peer_url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, j->peer_space, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, j->direction, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, j->status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, phase_names[j->phase], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)j->pulled);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)j->pushed);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)j->conflicts);
    sqlite3_bind_int64(st, 11, (sqlite3_int64)j->blobs);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)j->bytes);
    sqlite3_bind_int64(st, 13, (sqlite3_int64)j->started_at);
    if (j->finished_at) sqlite3_bind_int64(st, 14, (sqlite3_int64)j->finished_at);
    if (j->error[0]) sqlite3_bind_text(st, 15, j->error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 16, j->actor, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 17, (sqlite3_int64)j->errors);
    struct buf items, meta;
    buf_init(&items);
    buf_init(&meta);
    error_items_json(&items, j);
    sqlite3_bind_text(st, 18, items.data, (int)items.len, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : wop_fail(op, 500, "storage_error", "recording the sync job failed");
    char target[600];
    snprintf(target, sizeof target, "%.500s#%.63s", j->peer_url, j->peer_space);
    if (rc == 0 && o->insert) {
        audit_meta(j, false, &meta);
        if (wtx_audit(tx, j->actor, "sync.start", j->space, target, meta.data, j->remote) < 0)
            rc = wop_fail(op, 500, "storage_error", "audit failed");
    }
    if (rc == 0 && o->finish) {
        buf_reset(&meta);
        meta.len = 0;
        audit_meta(j, true, &meta);
        if (wtx_audit(tx, j->actor, "sync.finish", j->space, target, meta.data, j->remote) < 0)
            rc = wop_fail(op, 500, "storage_error", "audit failed");
    }
    buf_free(&items);
    buf_free(&meta);
    return rc;
}

static void answer_waiter(struct sync_job *j);
static void answer_accepted(struct sync_job *j);

/* The job's answers wait for its row: a client that reads GET /sync/jobs
 * right after the answer sees what the answer said. */
static void job_row_done(struct wop *op, struct http_req *r)
{
    struct job_row_op *o = container_of(op, struct job_row_op, op);
    struct sync_job *j = o->job;
    UNUSED(r);
    j->rows_pending--;
    if (o->insert) answer_accepted(j);
    if (o->finish) {
        publish(j);                  /* the end state, now that GET /sync/jobs shows it too */
        answer_waiter(j);
    }
    free(o);
}

static void save_row(struct sync_job *j, bool insert, bool fin)
{
    struct job_row_op *o = xcalloc(1, sizeof *o);
    o->snap = *j;
    o->snap.token = NULL;
    o->snap.conflicted = NULL;
    o->snap.waiter = NULL;
    o->snap.accepted = NULL;
    o->job = j;
    o->insert = insert;
    o->finish = fin;
    j->rows_pending++;
    if (writer_submit(j->srv->writer, &o->op, NULL, job_row_apply, job_row_done) < 0) {
        free(o);
        j->rows_pending--;
        if (insert) answer_accepted(j);
        if (fin) {
            publish(j);
            answer_waiter(j);
        }
    }
}

/* The job's row and its sync.start audit. A job answered with 202 stores it
 * at once (the answer follows it); any other job stores it when it first
 * has something to write, so a sync with nothing to do commits once: its
 * row, start and end together (save_end_row). */
static void save_start_row(struct sync_job *j)
{
    if (j->row_saved) return;
    j->row_saved = true;
    save_row(j, true, false);
}

static void save_end_row(struct sync_job *j)
{
    bool start = !j->row_saved;
    j->row_saved = true;
    save_row(j, start, true);
}

/* ---- ending ------------------------------------------------------------- */

/* A finished job nothing refers to any more (its rows written, no waiter). */
static bool job_forgettable(const struct sync_job *x)
{
    return strcmp(x->status, "running") && !x->rows_pending && !x->pipeline && !x->cp_pending && !x->waiter &&
           !x->accepted;
}

static void push_pre_free(struct sync_job *j);

static void job_free(struct sync_job *x)
{
    json_decref(x->conflicted);
    free(x->token);
    free(x);
}

static void job_forget(struct sync_ctx *sc, struct sync_job *x)
{
    push_pre_free(x);
    list_remove(&x->link);
    sc->n--;
    job_free(x);
}

/* An entity diverged (collection/id); NULL: one the peer did not name. */
static void conflict_seen(struct sync_job *j, const char *collection, const char *id)
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

static void job_forget_old(struct sync_ctx *sc)
{
    while (sc->n > SYNC_KEEP) {
        struct list *l;
        struct sync_job *old = NULL;
        for (l = sc->jobs.next; l != &sc->jobs; l = l->next) {
            struct sync_job *x = container_of(l, struct sync_job, link);
            if (job_forgettable(x)) {
                old = x;
                break;
            }
        }
        if (!old) return;
        job_forget(sc, old);
    }
}

/* Ends the job: completed (error_fmt NULL), or failed with that error;
 * http is what a wait:true request is answered with for a failure: 502 the
 * peer failed or refused, 504 it did not answer in time, 503 this server is
 * shutting down or overloaded, 500 a local failure. A job that ran to its
 * end but could not apply some of the items it was sent (j->errors) ends
 * "partial", with 502 for a wait:true request: "completed" says that
 * everything was applied, ignored as known, or kept as a conflict. */
static void finish(struct sync_job *j, int http, const char *error_fmt, ...) PRINTF_LIKE(3, 4);
static void finish(struct sync_job *j, int http, const char *error_fmt, ...)
{
    if (strcmp(j->status, "running")) return;        /* finished already */
    if (error_fmt) {
        j->fail_status = http ? http : 500;
        va_list ap;
        va_start(ap, error_fmt);
        vsnprintf(j->error, sizeof j->error, error_fmt, ap);
        va_end(ap);
        snprintf(j->status, sizeof j->status, "failed");
    } else if (j->errors) {
        j->fail_status = 502;
        snprintf(j->error, sizeof j->error, "%llu item%s could not be applied; error_items describes %s",
                 (unsigned long long)j->errors, j->errors == 1 ? "" : "s",
                 j->errors == 1 ? "it" : j->errors > SYNC_ERROR_ITEMS ? "the first ones" : "them");
        snprintf(j->status, sizeof j->status, "partial");
        j->phase = PH_DONE;
    } else {
        snprintf(j->status, sizeof j->status, "completed");
        j->phase = PH_DONE;
    }
    j->finished_at = now_ms_wall();
    memset(j->token, 0, strlen(j->token));
    metrics_sync(j->srv->metrics, j->status, j->pulled, j->pushed, j->blobs);
    save_end_row(j);                 /* the end event and the waiter's answer follow the stored row */
    log_info("sync_finished", "\"job\":\"%s\",\"space\":\"%s\",\"status\":\"%s\",\"pulled\":%llu,\"pushed\":%llu,"
             "\"errors\":%llu,\"requests\":%llu", j->id, j->space, j->status, (unsigned long long)j->pulled,
             (unsigned long long)j->pushed, (unsigned long long)j->errors, (unsigned long long)j->requests);
    if (j->peer_name[0]) peer_job_finished(j);
    job_forget_old(j->srv->sync);
}

/* ---- blobs: only the missing ones move, before the entities ------------- */

/* Blob transfers run on a threadpool thread (never the loop): the blobs a
 * page's entities reference that the receiving space lacks, file to file
 * with a blocking curl easy handle, so memory stays flat whatever the
 * blob's size. "Lacks" is per space on both sides: a push asks the peer's
 * space (POST /blobs/missing), a pull asks our space's references -- a blob
 * whose bytes are on disk here for another space still comes from the peer,
 * since the bytes are what entitles a space to a blob. */
struct blob_xfer {
    char url[600], token[128], data_dir[1024];     /* in */
    char owner[32];                                 /* in: the job's id, for blob pins */
    struct server *srv;                             /* in: its store and blob pins */
    int64_t space_id;                               /* in: our space */
    uint64_t moved, bytes;                          /* out */
    char (*pinned)[65];                             /* out: placed by a pull, pinned until */
    size_t npinned;                                 /*      the page is applied or dropped */
    char err[300];
};

static size_t to_file(char *p, size_t size, size_t n, void *arg)
{
    FILE *f = arg;
    return fwrite(p, size, n, f);
}

static size_t to_buf(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    if (b->len + size * n > (1u << 20)) return 0;
    buf_append(b, p, size * n);
    return size * n;
}

static CURL *easy_for(const struct blob_xfer *bj, const char *url, struct curl_slist **hdrs)
{
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    char auth[200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", bj->token);
    *hdrs = curl_slist_append(NULL, auth);
    *hdrs = curl_slist_append(*hdrs, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);          /* a stalled transfer fails after 30 s */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    return e;
}

/* pull: fetch the ones our space lacks. Each is hash-checked, put in place
 * and pinned; pull_apply references them in the page's transaction. */
static void blobs_fetch(struct blob_xfer *bj, char (*hashes)[65], size_t nh)
{
    bool *have = xcalloc(nh + 1, sizeof *have);
    sqlite3 *db = store_reader_get(bj->srv->store);
    sqlite3_stmt *q = NULL;
    for (size_t i = 0; db && i < nh; i++) {
        /* fetched by an earlier page of this job, not yet applied: the
         * bytes came from the same peer space; this page pins them too.
         * (Checked before the references: once that page is applied and
         * unpinned, the reference is there to be read.) */
        if (blob_pin_owned(bj->srv, hashes[i], bj->owner)) {
            if (bj->npinned % 16 == 0) bj->pinned = xrealloc(bj->pinned, (bj->npinned + 16) * sizeof *bj->pinned);
            memcpy(bj->pinned[bj->npinned++], hashes[i], 65);
            have[i] = true;
            continue;
        }
        int in = blobs_in_space(db, &q, bj->space_id, hashes[i]);
        if (in < 0) {
            snprintf(bj->err, sizeof bj->err, "reading the space's blobs failed");
            break;
        }
        have[i] = in == 1;
    }
    sqlite3_finalize(q);
    store_reader_put(bj->srv->store, db);
    if (!db) snprintf(bj->err, sizeof bj->err, "reading the space's blobs failed: no database connection");
    for (size_t i = 0; !bj->err[0] && i < nh; i++) {
        const char *h = hashes[i];
        {
            if (have[i]) continue;
            char url[800], tmp[1200], dir[1200];
            snprintf(url, sizeof url, "%s/blobs/%s", bj->url, h);
            snprintf(dir, sizeof dir, "%s/blobs/%.2s", bj->data_dir, h);
            char rnd[27];
            ulid_make(rnd, now_ms_wall());
            snprintf(tmp, sizeof tmp, "%s/blobs/tmp/sync-%s.tmp", bj->data_dir, rnd);
            char tdir[1100];
            snprintf(tdir, sizeof tdir, "%s/blobs/tmp", bj->data_dir);
            mkdir_p(dir, 0700);
            mkdir_p(tdir, 0700);
            FILE *f = fopen(tmp, "wbx");
            if (!f) { snprintf(bj->err, sizeof bj->err, "cannot create a temp file for a blob: %s", strerror(errno)); return; }
            struct curl_slist *hdrs = NULL;
            CURL *e = easy_for(bj, url, &hdrs);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, to_file);
            curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
            CURLcode rc = curl_easy_perform(e);
            long code = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            curl_easy_cleanup(e);
            curl_slist_free_all(hdrs);
            bool ok = rc == CURLE_OK && code == 200 && fflush(f) == 0 && fsync(fileno(f)) == 0;
            fclose(f);
            /* it must be what its name says */
            char got[65] = "";
            if (ok) {
                int fd = open(tmp, O_RDONLY | O_CLOEXEC);
                EVP_MD_CTX *md = EVP_MD_CTX_new();
                EVP_DigestInit_ex(md, sha256_md(), NULL);
                unsigned char chunk[65536];
                ssize_t n;
                while (fd >= 0 && (n = read(fd, chunk, sizeof chunk)) > 0) {
                    EVP_DigestUpdate(md, chunk, (size_t)n);
                    bj->bytes += (uint64_t)n;
                }
                if (fd >= 0) close(fd);
                unsigned char d[32];
                unsigned int l = 32;
                EVP_DigestFinal_ex(md, d, &l);
                EVP_MD_CTX_free(md);
                hex_encode(got, d, 32);
            }
            int placed = ok && !strcmp(got, h) ? blob_place(bj->srv, tmp, h, bj->owner) : -1;
            if (placed < 0) {
                unlink(tmp);
                snprintf(bj->err, sizeof bj->err, "fetching blob %.16s… from the peer failed (%s, HTTP %ld%s)", h,
                         rc == CURLE_OK ? "ok" : curl_easy_strerror(rc), code, ok && strcmp(got, h) ? ", hash mismatch" : "");
                break;
            }
            if (bj->npinned % 16 == 0) bj->pinned = xrealloc(bj->pinned, (bj->npinned + 16) * sizeof *bj->pinned);
            memcpy(bj->pinned[bj->npinned++], h, 65);
            bj->moved++;
        }
    }
    free(have);
}

/* Loop: the page's references are committed, or will never be. */
static void blob_xfer_release(struct blob_xfer *bj)
{
    for (size_t i = 0; i < bj->npinned; i++) blob_unpin(bj->srv, bj->pinned[i]);
    free(bj->pinned);
    bj->pinned = NULL;
    bj->npinned = 0;
}

/* push: ask which the peer lacks, send those */
static void blobs_send(struct blob_xfer *bj, char (*hashes)[65], size_t nh)
{
    if (nh == 0) return;
    {
        struct buf q, ans;
        buf_init(&q);
        buf_init(&ans);
        buf_puts(&q, "{\"hashes\":[");
        for (size_t k = 0; k < nh; k++) {
            if (k) buf_putc(&q, ',');
            json_cstr(&q, hashes[k]);
        }
        buf_puts(&q, "]}");
        char url[800];
        snprintf(url, sizeof url, "%s/blobs/missing", bj->url);
        struct curl_slist *hdrs = NULL;
        CURL *e = easy_for(bj, url, &hdrs);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q.data);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, to_buf);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &ans);
        CURLcode rc = curl_easy_perform(e);
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(e);
        curl_slist_free_all(hdrs);
        buf_free(&q);
        json_error_t je;
        json_t *m = (rc == CURLE_OK && code == 200) ? json_loadb(ans.data ? ans.data : "", ans.len, 0, &je) : NULL;
        buf_free(&ans);
        if (!m) {
            snprintf(bj->err, sizeof bj->err, "asking the peer for missing blobs failed (HTTP %ld)", code);
            return;
        }
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(m, "missing"), i, x) {
            const char *hh = json_name(x);
            if (!hh || !name_sha256_valid(hh, strlen(hh))) continue;
            char path[1200], purl[800];
            blob_path(bj->data_dir, hh, path, sizeof path);
            FILE *f = fopen(path, "rb");
            if (!f) {
                snprintf(bj->err, sizeof bj->err, "blob %.16s… is referenced here but missing", hh);
                break;
            }
            struct stat st;
            fstat(fileno(f), &st);
            snprintf(purl, sizeof purl, "%s/blobs/%s", bj->url, hh);
            e = easy_for(bj, purl, &hdrs);
            curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(e, CURLOPT_READDATA, f);
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, to_buf);
            struct buf sink;
            buf_init(&sink);
            curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
            rc = curl_easy_perform(e);
            code = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            curl_easy_cleanup(e);
            curl_slist_free_all(hdrs);
            buf_free(&sink);
            fclose(f);
            if (rc != CURLE_OK || (code != 200 && code != 201)) {
                snprintf(bj->err, sizeof bj->err, "sending blob %.16s… to the peer failed (HTTP %ld)", hh, code);
                break;
            }
            bj->moved++;
            bj->bytes += (uint64_t)st.st_size;
        }
        json_decref(m);
    }
}

static void answer_waiter(struct sync_job *j)
{
    if (!j->waiter || !strcmp(j->status, "running")) return;
    struct http_req *r = j->waiter;
    j->waiter = NULL;
    if (r->conn) {
        struct buf b;
        buf_init(&b);
        job_json(&b, j);
        bool ok = !strcmp(j->status, "completed");
        if (!ok) {                   /* the failed job, readable as an error too */
            b.len--;
            json_kv_str(&b, "message", j->error);
            buf_putc(&b, '}');
        }
        http_send_json(r, ok ? 200 : j->fail_status ? j->fail_status : 500, &b);
    }
    http_req_unref(r);
}

static void answer_accepted(struct sync_job *j)
{
    struct http_req *r = j->accepted;
    if (!r) return;
    j->accepted = NULL;
    if (r->conn) {
        struct buf b;
        buf_init(&b);
        job_json(&b, j);
        http_add_header(r, "Location", "/api/v1/spaces/%s/sync/jobs/%s", j->space, j->id);
        http_send_json(r, 202, &b);
    }
    http_req_unref(r);
}

/* ---- steps -------------------------------------------------------------- */

static void step(struct sync_job *j);
static void on_status(void *arg, const struct peer_result *res);
static void on_pull_page(void *arg, const struct peer_result *res);

static bool transient(const struct peer_result *res)
{
    /* a peer that did not answer within the timeout is not retried: a frozen
     * or overloaded peer would otherwise hold the job for minutes */
    if (res->timed_out) return false;
    return res->error || res->status == 429 || res->status == 502 || res->status == 503 || res->status == 504 ||
           res->status == 500;
}

static void on_retry(uv_timer_t *t)
{
    step(t->data);
}

/* Says why a peer request failed, for the job's error. */
static void peer_explain(const struct sync_job *j, const struct peer_result *res, const char *what, char *out,
                         size_t cap)
{
    if (res->error) snprintf(out, cap, "%s: the peer could not be reached: %s", what, res->error);
    else if (res->status == 401) snprintf(out, cap, "%s: the peer refused the token (401 unauthorized)", what);
    else if (res->status == 403) snprintf(out, cap, "%s: the peer's token may not do this (403 forbidden)", what);
    else if (res->status == 404 && res->body && res->body->len &&
             memmem(res->body->data, res->body->len, "\"space_not_found\"", 17))
        snprintf(out, cap, "%s: the peer has no space '%s' (404)", what, j->peer_space);
    else if (res->status == 404)
        snprintf(out, cap, "%s: nothing at %.100s/api/v1/spaces/%s (404): is the peer URL the base address of a "
                 "snapsync server (like http://host:7420)?", what, j->peer_url, j->peer_space);
    else snprintf(out, cap, "%s: the peer answered %d", what, res->status);
}

/* What a wait:true request gets for a failed peer request (see finish()). */
static int peer_fail_status(const struct sync_job *j, const struct peer_result *res)
{
    return j->srv->shutting_down ? 503 : res->timed_out ? 504 : 502;
}

/* Explains a failed peer request; retries transient failures with backoff.
 * Returns true when the job goes on (retry scheduled). */
static bool peer_failed(struct sync_job *j, const struct peer_result *res, const char *what)
{
    if (transient(res) && ++j->tries <= SYNC_RETRIES && !j->srv->shutting_down) {
        if (!j->retry_init) {
            uv_timer_init(j->srv->loop, &j->retry);
            j->retry.data = j;
            j->retry_init = true;
        }
        uint64_t delay = 250u << (2 * (j->tries - 1));          /* 250 ms, 1 s, 4 s */
        uv_timer_start(&j->retry, on_retry, delay, 0);
        return true;
    }
    char why[300];
    peer_explain(j, res, what, why, sizeof why);
    finish(j, peer_fail_status(j, res), "%s", why);
    return false;
}

static void url_for(const struct sync_job *j, const char *tail, char *out, size_t cap)
{
    size_t l = strlen(j->peer_url);
    bool slash = l && j->peer_url[l - 1] == '/';
    snprintf(out, cap, "%.*s/api/v1/spaces/%s%s", (int)(slash ? l - 1 : l), j->peer_url, j->peer_space, tail);
}

/* Returns 0, or -1 when the request could not start (the job is finished
 * with that error unless the caller says otherwise: pull pages). */
static int send_peer(struct sync_job *j, const char *method, const char *tail, const char *body, size_t len,
                     peer_cb cb)
{
    char url[1100];
    url_for(j, tail, url, sizeof url);
    j->requests++;
    if (body) j->bytes += len;
    if (peer_request(j->srv, method, url, j->token, body, len, (long)j->srv->sync->timeout_ms, cb, j) < 0) {
        if (cb != on_pull_page) finish(j, 500, "cannot start a request to %s", url);
        return -1;
    }
    return 0;
}

static void blob_xfer_init(struct blob_xfer *x, const struct sync_job *j)
{
    memset(x, 0, sizeof *x);
    url_for(j, "", x->url, sizeof x->url);
    snprintf(x->token, sizeof x->token, "%s", j->token);
    snprintf(x->data_dir, sizeof x->data_dir, "%s", j->srv->cfg->data_dir);
    x->srv = j->srv;
    x->space_id = j->space_id;
    snprintf(x->owner, sizeof x->owner, "%s", j->id);
}

/* -- checkpoints (read on the threadpool) -- */

static void cp_work(sqlite3 *db, struct read_job *rj)
{
    struct sync_job *j = rj->user;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT direction, peer_uid, version FROM checkpoints WHERE space_id = ? AND peer_url = ?"
                           " AND peer_space = ?",
                           -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_int64(q, 1, j->space_id);
    sqlite3_bind_text(q, 2, j->peer_url, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, j->peer_space, -1, SQLITE_STATIC);
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *dir = (const char *)sqlite3_column_text(q, 0);
        bool pull = !strcmp(dir, "pull");
        snprintf(pull ? j->cp_pull_uid : j->cp_push_uid, 27, "%s", (const char *)sqlite3_column_text(q, 1));
        *(pull ? &j->cp_pull : &j->cp_push) = (uint64_t)sqlite3_column_int64(q, 2);
    }
    sqlite3_finalize(q);
}

static void cp_done(struct read_job *rj, struct http_req *r)
{
    struct sync_job *j = rj->user;
    UNUSED(r);
    if (rj->status) {
        finish(j, 500, "reading checkpoints failed: %s", rj->msg);
        return;
    }
    j->cp_loaded = true;
    step(j);
}

static const char SQL_CHECKPOINT_GET[] =
    "SELECT peer_uid, version FROM checkpoints WHERE space_id = ? AND peer_url = ? AND peer_space = ?"
    " AND direction = 'pull'";

/* Writer thread: moves a checkpoint, in the caller's transaction. */
static const char SQL_CHECKPOINT[] =
    "INSERT INTO checkpoints(space_id, peer_url, peer_space, direction, peer_uid, version, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO UPDATE SET peer_uid = ?5, version = ?6, updated_at = ?7";

static int checkpoint_save(struct wtx *tx, int64_t space_id, const char *url, const char *pspace, const char *dir,
                           const char *uid, uint64_t version)
{
    sqlite3_stmt *st = wtx_stmt(tx, SQL_CHECKPOINT);
    sqlite3_bind_int64(st, 1, space_id);
    sqlite3_bind_text(st, 2, url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, pspace, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, dir, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)version);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)wtx_now(tx));
    return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

/* -- pull: a pipeline of pages, each applied with its checkpoint -- */

/* One page of the peer's feed on its way in: fetched on the loop (curl),
 * parsed, checked and canonicalized on the threadpool with its blobs moved
 * (pull_parse_work), then applied by the writer with the checkpoint in the
 * same transaction (pull_apply). Pages are fetched in order, and handed to
 * the writer in that same order whatever order their parses finish in;
 * at most SYNC_PAGES_HELD exist at once (memory stays bounded). */
struct pull_page {
    struct job job;
    struct wop op;
    struct list link;                /* j->ready: parsed, waiting for its turn */
    struct sync_job *j;              /* loop side */
    uint64_t seq, since;
    bool check_cp;                   /* not the job's first page: see pull_apply */
    char *raw;                       /* the page as received; freed by the parse */
    size_t raw_len;
    bool tail_ok, tail_more;         /* what tail_scan read on the loop */
    uint64_t tail_last;
    /* threadpool results */
    int parse_rc;
    struct json_err err;
    struct rep_batch batch;
    bool blobs_fetched;              /* the gated blob job was sent */
    struct blob_xfer xfer;
    /* writer: copies of the job's identity, and the counts */
    char peer_instance[27], peer_uid[27], peer_url[512], peer_space[64], space[64];
    int64_t space_id;                /* the space whose references the blob job checked */
    struct rep_counts cnt;
};

static void pull_pump(struct sync_job *j);
static void pull_submit_ready(struct sync_job *j);

static void blob_gate_submit(struct server *srv, struct job *jb, job_work_fn work, job_done_fn done)
{
    struct sync_ctx *sc = srv->sync;
    if (sc->blob_active < sc->blob_cap) {
        sc->blob_active++;
        job_submit(&srv->jobs, jb, NULL, work, done);
        return;
    }
    struct blob_wait *w = xcalloc(1, sizeof *w);
    w->job = jb;
    w->work = work;
    w->done = done;
    list_insert_tail(&sc->blob_waiting, &w->link);
    sc->blob_waited++;
}

/* A gated job is done (call first thing in its done callback). */
static void blob_gate_release(struct server *srv)
{
    struct sync_ctx *sc = srv->sync;
    sc->blob_active--;
    if (list_empty(&sc->blob_waiting)) return;
    struct blob_wait *w = container_of(sc->blob_waiting.next, struct blob_wait, link);
    list_remove(&w->link);
    sc->blob_active++;
    job_submit(&srv->jobs, w->job, NULL, w->work, w->done);
    free(w);
}

/* No page may reach the writer any more: the pull failed, or the job ended
 * some other way (shutdown). */
static bool pull_stopping(const struct sync_job *j)
{
    return j->pull_error[0] || strcmp(j->status, "running");
}

static void pull_page_free(struct pull_page *p)
{
    blob_xfer_release(&p->xfer);
    rep_batch_free(&p->batch);
    free(p->raw);
    free(p);
}

/* Stops the pull: no more fetches; the job finishes with this error once
 * the pages already on their way are done with (so a page that is being
 * applied is never reported as lost). */
static void pull_stop(struct sync_job *j, int http, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void pull_stop(struct sync_job *j, int http, const char *fmt, ...)
{
    if (!j->pull_error[0]) {
        j->pull_status = http;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->pull_error, sizeof j->pull_error, fmt, ap);
        va_end(ap);
    }
    pull_submit_ready(j);            /* drops the parsed pages that wait */
    pull_pump(j);
}

/* Writer thread. The page's revisions and the checkpoint at its end, in one
 * transaction. A page other than the job's first applies only on top of the
 * page before it: if the stored checkpoint is not where this page starts
 * (the page before failed, or something moved the checkpoint), nothing is
 * applied -- a later page can never skip over changes of an earlier one. */
static int pull_apply(struct wtx *tx, struct wop *op)
{
    struct pull_page *p = container_of(op, struct pull_page, op);
    struct space_stats *sp = wtx_space(tx, p->space);
    if (!sp || sp->id != p->space_id) return wop_fail(op, 404, "space_not_found", "the local space is gone");
    /* the blobs the page names arrived by sync: each was referenced here
     * already or fetched from the peer's space and hash-checked (else the
     * page never gets here), so the space references them now */
    for (size_t k = 0; k < p->batch.nblobs; k++)
        if (blobs_ref_add(tx, sp->id, p->batch.blobs[k], NULL) < 0)
            return wop_fail(op, 500, "storage_error", "recording the page's blobs failed");
    if (p->check_cp) {
        sqlite3_stmt *st = wtx_stmt(tx, SQL_CHECKPOINT_GET);
        sqlite3_bind_int64(st, 1, sp->id);
        sqlite3_bind_text(st, 2, p->peer_url, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, p->peer_space, -1, SQLITE_STATIC);
        uint64_t at = 0;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), p->peer_uid))
            at = (uint64_t)sqlite3_column_int64(st, 1);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "reading the checkpoint failed");
        if (at != p->since)
            return wop_fail(op, 409, "out_of_order", "the page before this one was not applied (checkpoint %llu, page "
                            "from %llu)", (unsigned long long)at, (unsigned long long)p->since);
    }
    char origin[80];
    snprintf(origin, sizeof origin, "sync:%s", p->peer_instance);
    if (p->peer_instance[0]) wtx_set_origin(tx, p->peer_instance);
    if (rep_apply_batch(tx, op, sp, &p->batch, origin, &p->cnt, NULL) < 0) return -1;
    if (checkpoint_save(tx, sp->id, p->peer_url, p->peer_space, "pull", p->peer_uid, p->batch.last_version) < 0)
        return wop_fail(op, 500, "storage_error", "saving the checkpoint failed");
    return 0;
}

static void pull_applied(struct wop *op, struct http_req *r)
{
    struct pull_page *p = container_of(op, struct pull_page, op);
    struct sync_job *j = p->j;
    UNUSED(r);
    j->held--;
    j->pipeline--;
    if (op->status) {
        pull_stop(j, 500, "applying pulled changes failed: %s", op->msg);
    } else {
        j->pulled += p->cnt.applied + p->cnt.conflicts;
        j->errors += p->cnt.errors;
        for (size_t i = 0; (p->cnt.conflicts || p->cnt.errors) && i < p->batch.n; i++) {
            const struct rep_item *it = &p->batch.items[i];
            if (it->conflicted) conflict_seen(j, it->collection, it->id);
            if (it->err_code) error_item_add(j, "pull", it->collection, it->id, it->err_code, it->err);
        }
        j->cp_pull = p->batch.last_version;
        snprintf(j->cp_pull_uid, sizeof j->cp_pull_uid, "%s", j->peer_uid);
        if (!strcmp(j->status, "running")) publish(j);
        pull_pump(j);
    }
    pull_page_free(p);
}

/* Hands parsed pages to the writer, in page order; once the pull is
 * stopping, drops them instead (none reaches the writer after a failure). */
static void pull_submit_ready(struct sync_job *j)
{
    while (pull_stopping(j) && !list_empty(&j->ready)) {
        struct pull_page *p = container_of(j->ready.next, struct pull_page, link);
        list_remove(&p->link);
        j->held--;
        j->pipeline--;
        pull_page_free(p);
    }
    for (;;) {
        struct pull_page *next = NULL;
        struct list *l;
        for (l = j->ready.next; l != &j->ready; l = l->next) {
            struct pull_page *p = container_of(l, struct pull_page, link);
            if (p->seq == j->seq_submit) { next = p; break; }
        }
        if (!next) return;
        list_remove(&next->link);
        j->seq_submit++;
        if (writer_submit(j->srv->writer, &next->op, NULL, pull_apply, pull_applied) < 0) {
            j->held--;
            j->pipeline--;
            pull_page_free(next);
            pull_stop(j, 503, "the local write queue is full");
            continue;
        }
    }
}

/* threadpool */
static void pull_parse_work(struct job *jb)
{
    struct pull_page *p = container_of(jb, struct pull_page, job);
    p->parse_rc = rep_batch_parse(&p->batch, p->raw, p->raw_len, &p->err);
    free(p->raw);
    p->raw = NULL;
    if (p->parse_rc == 0 && !p->batch.has_last) {
        p->parse_rc = -1;
        snprintf(p->err.message, sizeof p->err.message, "the page lacks last_version");
    }
}

/* blobs the page's entities reference come first (an entity naming a blob
 * this server lacks would be unusable): a second job, through the gate */
static void pull_blobs_work(struct job *jb)
{
    struct pull_page *p = container_of(jb, struct pull_page, job);
    blobs_fetch(&p->xfer, p->batch.blobs, p->batch.nblobs);
}

static void pull_parsed(struct job *jb, struct http_req *r);

static void pull_blobs_done(struct job *jb, struct http_req *r)
{
    struct pull_page *p = container_of(jb, struct pull_page, job);
    blob_gate_release(p->j->srv);
    pull_parsed(jb, r);
}

static void pull_parsed(struct job *jb, struct http_req *r)
{
    struct pull_page *p = container_of(jb, struct pull_page, job);
    struct sync_job *j = p->j;
    UNUSED(r);
    if (p->parse_rc == 0 && p->batch.nblobs && !p->blobs_fetched && !pull_stopping(j)) {
        p->blobs_fetched = true;
        blob_gate_submit(j->srv, &p->job, pull_blobs_work, pull_blobs_done);
        return;
    }
    j->blobs += p->xfer.moved;
    j->bytes += p->xfer.bytes;
    const char *bad = NULL;
    if (p->parse_rc < 0) bad = p->err.message;
    else if (p->tail_ok && (p->tail_last != p->batch.last_version || p->tail_more != p->batch.more))
        bad = "its end does not match what was read ahead";
    else if (p->batch.last_version < p->since || (p->batch.more && p->batch.last_version == p->since))
        bad = "last_version goes backwards";
    if (bad || p->xfer.err[0] || pull_stopping(j)) {
        j->held--;
        j->pipeline--;
        if (bad) pull_stop(j, 502, "the peer's changes page is not usable: %s", bad);
        else if (p->xfer.err[0]) pull_stop(j, 502, "pull: %s", p->xfer.err);
        else pull_pump(j);           /* stopping already: dropped */
        pull_page_free(p);
        return;
    }
    if (!p->tail_ok) {
        /* the end of the page was not read ahead: only now is the next
         * page's start known */
        j->fetch_since = p->batch.last_version;
        j->fetch_more = p->batch.more;
        j->fetch_blocked = false;
    }
    list_insert_tail(&j->ready, &p->link);
    pull_submit_ready(j);
    pull_pump(j);
}

/* Reads ,"last_version":N,"more":B} off the end of a page (the shape
 * changes_work writes) without parsing the page, so the next page can be
 * fetched while this one is parsed. Anything else: false, and the caller
 * waits for the parse. The parse checks what was read here. */
static bool tail_scan(const char *raw, size_t len, uint64_t *last, bool *more)
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

static void on_pull_page(void *arg, const struct peer_result *res)
{
    struct sync_job *j = arg;
    j->fetching = false;
    j->pipeline--;
    if (res->status != 200) {
        j->held--;
        if (!j->pull_error[0] && !strcmp(j->status, "running") && transient(res) && j->tries < SYNC_RETRIES &&
            !j->srv->shutting_down) {
            peer_failed(j, res, "pull");         /* retries: the timer calls step() -> pull_pump() */
            return;
        }
        char why[300];
        peer_explain(j, res, "pull", why, sizeof why);
        pull_stop(j, peer_fail_status(j, res), "%s", why);
        return;
    }
    j->tries = 0;
    j->bytes += res->body->len;
    struct pull_page *p = xcalloc(1, sizeof *p);
    p->j = j;
    p->seq = j->seq_next++;
    p->since = j->fetch_since;
    p->check_cp = p->seq != 0;
    p->raw = buf_steal(res->body, &p->raw_len);
    snprintf(p->peer_instance, sizeof p->peer_instance, "%s", j->peer_instance);
    snprintf(p->peer_uid, sizeof p->peer_uid, "%s", j->peer_uid);
    snprintf(p->peer_url, sizeof p->peer_url, "%s", j->peer_url);
    snprintf(p->peer_space, sizeof p->peer_space, "%s", j->peer_space);
    snprintf(p->space, sizeof p->space, "%s", j->space);
    p->space_id = j->space_id;
    blob_xfer_init(&p->xfer, j);
    p->tail_ok = p->raw && tail_scan(p->raw, p->raw_len, &p->tail_last, &p->tail_more);
    if (p->tail_ok && (p->tail_last < p->since || (p->tail_more && p->tail_last == p->since)))
        p->tail_ok = false;          /* let the parse say what is wrong */
    if (p->tail_ok) {
        j->fetch_since = p->tail_last;
        j->fetch_more = p->tail_more;
    } else {
        j->fetch_blocked = true;
    }
    j->pipeline++;
    job_submit(&j->srv->jobs, &p->job, NULL, pull_parse_work, pull_parsed);
    pull_pump(j);
}

/* Moves the pull along: fetches the next page while fewer than
 * SYNC_PAGES_HELD are on their way; ends the phase when the last page is
 * applied, or the job once a stopped pull has drained. Loop thread. */
static void pull_pump(struct sync_job *j)
{
    if (strcmp(j->status, "running")) return;
    if (j->pull_error[0] || j->srv->shutting_down) {
        if (!j->pull_error[0]) {
            snprintf(j->pull_error, sizeof j->pull_error, "interrupted: the server is shutting down");
            j->pull_status = 503;
        }
        if (j->pipeline == 0) finish(j, j->pull_status, "%s", j->pull_error);
        return;
    }
    if (j->fetching || (j->retry_init && uv_is_active((uv_handle_t *)&j->retry))) return;
    if (j->fetch_more && !j->fetch_blocked && j->held < SYNC_PAGES_HELD) {
        char tail[128];
        /* what came from us does not need to come back */
        /* small pages first: the first page is parsed and applied while the
         * next ones come, instead of one big page going through each stage
         * alone (an incremental sync of 1,000 changes is 3 pages, not 1) */
        if (j->page_limit < SYNC_FIRST_PAGE) j->page_limit = SYNC_FIRST_PAGE;
        snprintf(tail, sizeof tail, "/changes?since=%llu&limit=%d&style=all_revs&exclude_origin=%s",
                 (unsigned long long)j->fetch_since, j->page_limit, store_instance_id(j->srv->store));
        j->page_limit = j->page_limit * 2 < SYNC_PAGE ? j->page_limit * 2 : SYNC_PAGE;
        j->fetching = true;
        j->held++;
        j->pipeline++;
        if (send_peer(j, "GET", tail, NULL, 0, on_pull_page) < 0) {
            j->fetching = false;
            j->held--;
            j->pipeline--;
            pull_stop(j, 500, "cannot start a request to the peer");
        }
        return;
    }
    if (!j->fetch_more && !j->fetch_blocked && j->held == 0) {
        j->phase = j->push ? PH_PUSH : PH_DONE;
        step(j);
    }
}

/* -- push -- */

struct push_cp_op {
    struct wop op;
    struct sync_job *j;
    int64_t space_id;
    char peer_url[512], peer_space[64], peer_uid[27];
    uint64_t version;
    uint64_t pull_version;           /* non-zero: the pull checkpoint moves too */
};

static int push_cp_apply(struct wtx *tx, struct wop *op)
{
    struct push_cp_op *p = container_of(op, struct push_cp_op, op);
    if (checkpoint_save(tx, p->space_id, p->peer_url, p->peer_space, "push", p->peer_uid, p->version) < 0 ||
        (p->pull_version &&
         checkpoint_save(tx, p->space_id, p->peer_url, p->peer_space, "pull", p->peer_uid, p->pull_version) < 0))
        return wop_fail(op, 500, "storage_error", "saving the checkpoint failed");
    return 0;
}

/* The push goes on as soon as the peer has acknowledged a page (from
 * push_sent); the checkpoint of that page commits meanwhile, in order (one
 * writer), and the job ends only once the last one has. */
static void push_cp_done(struct wop *op, struct http_req *r)
{
    struct push_cp_op *p = container_of(op, struct push_cp_op, op);
    struct sync_job *j = p->j;
    UNUSED(r);
    j->cp_pending--;
    if (op->status) {
        finish(j, 500, "saving the push checkpoint failed");
    } else {
        if (p->version > j->cp_push) j->cp_push = p->version;
        if (p->pull_version > j->cp_pull) j->cp_pull = p->pull_version;
        snprintf(j->cp_push_uid, sizeof j->cp_push_uid, "%s", j->peer_uid);
        if (!strcmp(j->status, "running") && j->phase == PH_DONE && !j->cp_pending) step(j);
    }
    free(p);
}

static void save_push_cp(struct sync_job *j, uint64_t version, uint64_t pull_version)
{
    struct push_cp_op *p = xcalloc(1, sizeof *p);
    j->cp_pending++;
    p->j = j;
    p->space_id = j->space_id;
    p->version = version;
    p->pull_version = pull_version;
    snprintf(p->peer_url, sizeof p->peer_url, "%s", j->peer_url);
    snprintf(p->peer_space, sizeof p->peer_space, "%s", j->peer_space);
    snprintf(p->peer_uid, sizeof p->peer_uid, "%s", j->peer_uid);
    if (writer_submit(j->srv->writer, &p->op, NULL, push_cp_apply, push_cp_done) < 0) {
        free(p);
        j->cp_pending--;
        finish(j, 503, "the local write queue is full");
    }
}

static void on_push_sent(void *arg, const struct peer_result *res)
{
    struct sync_job *j = arg;
    if (res->status != 200) {
        peer_failed(j, res, "push");
        return;
    }
    j->tries = 0;
    json_error_t je;
    json_t *v = json_loadb(res->body->data ? res->body->data : "", res->body->len, 0, &je);
    j->pushed += (uint64_t)json_integer_value(json_object_get(v, "applied")) +
                 (uint64_t)json_integer_value(json_object_get(v, "conflicts"));
    /* what the peer could not apply: its count, or the results that say
     * "error" if it counts fewer (an answer is not trusted to agree) */
    uint64_t errors = 0, listed = 0;
    json_t *ev = json_object_get(v, "errors");
    if (json_is_integer(ev) && json_integer_value(ev) > 0) errors = (uint64_t)json_integer_value(ev);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(v, "results"), i, x) {
        const char *st = json_name(json_object_get(x, "status"));
        if (!st) continue;
        const char *c = json_name(json_object_get(x, "collection")), *id = json_name(json_object_get(x, "id"));
        if (!strcmp(st, "conflict")) {
            conflict_seen(j, c, id);
        } else if (!strcmp(st, "error")) {
            listed++;
            error_item_add(j, "push", c, id, json_name(json_object_get(x, "error")),
                           json_name(json_object_get(x, "message")));
        }
    }
    j->errors += errors > listed ? errors : listed;
    /* nothing else happened on the peer since our pull: its new versions
     * are all ours, and the next pull may start after them */
    uint64_t before = (uint64_t)json_integer_value(json_object_get(v, "version_before"));
    uint64_t after = (uint64_t)json_integer_value(json_object_get(v, "server_version"));
    uint64_t pull_to = (j->pull || j->cp_pull_uid[0]) && before == j->cp_pull && !strcmp(j->cp_pull_uid, j->peer_uid)
                           ? after : 0;
    json_decref(v);
    if (pull_to) j->cp_pull = pull_to;       /* the next page's version_before is compared with it */
    j->push_sent = j->page_cp;
    if (!j->push_target || j->push_target < j->push_sent) j->push_target = j->push_sent;
    if (!j->page_more) j->phase = PH_DONE;
    save_push_cp(j, j->page_cp, pull_to);
    if (strcmp(j->status, "running")) return;  /* the save failed at once */
    publish(j);
    step(j);                                   /* the next page, while the checkpoint commits */
}

/* A push page's blobs go first (threadpool): the peer refuses nothing for a
 * missing blob, but the entity would be unusable there without it. */
struct push_blobs {
    struct job job;
    struct sync_job *j;              /* loop side only */
    char *page;                      /* read-only on the threadpool */
    size_t page_len;
    uint64_t cp;                     /* the page ends at this version */
    bool more;
    struct blob_xfer xfer;
};

static void push_blobs_work(struct job *jb)
{
    struct push_blobs *pb = container_of(jb, struct push_blobs, job);
    /* bodies read from our own database are canonical: a body that names
     * blobs holds the key "_blobs" literally, so a page without the text
     * has none and needs no parse */
    if (!memmem(pb->page, pb->page_len, "\"_blobs\"", 8)) return;
    struct rep_batch b;
    struct json_err je;
    if (rep_batch_parse(&b, pb->page, pb->page_len, &je) == 0) blobs_send(&pb->xfer, b.blobs, b.nblobs);
    else snprintf(pb->xfer.err, sizeof pb->xfer.err, "reading the local page failed: %s", je.message);
    rep_batch_free(&b);
}

static void push_prefetch(struct sync_job *j);

/* A page whose blobs the peer now has goes out; the next one is read
 * meanwhile. */
static void push_send(struct sync_job *j, struct push_blobs *pb)
{
    j->blobs += pb->xfer.moved;
    j->bytes += pb->xfer.bytes;
    j->page_cp = pb->cp;
    j->page_more = pb->more;
    char *page = pb->page;
    size_t len = pb->page_len;
    if (pb->xfer.err[0]) {
        finish(j, 502, "push: %s", pb->xfer.err);
    } else {
        /* the page goes as it is: /replicate takes {"changes":[...]} too;
         * say who we are so the peer does not send these back to us */
        struct buf b;
        buf_init(&b);
        buf_reserve(&b, len + 64);
        buf_puts(&b, "{\"source_instance\":");
        json_cstr(&b, store_instance_id(j->srv->store));
        buf_putc(&b, ',');
        buf_append(&b, page + 1, len - 1);      /* skip the page's '{' */
        send_peer(j, "POST", "/replicate", b.data, b.len, on_push_sent);
        buf_free(&b);
        if (j->page_more) push_prefetch(j);
    }
    free(page);
    free(pb);
}

static void push_blobs_done(struct job *jb, struct http_req *r)
{
    struct push_blobs *pb = container_of(jb, struct push_blobs, job);
    struct sync_job *j = pb->j;
    UNUSED(r);
    blob_gate_release(j->srv);
    push_send(j, pb);
}

/* A read found nothing (left) to send: remember how far it looked. */
static void push_reached_end(struct sync_job *j, uint64_t since)
{
    j->phase = PH_DONE;
    if (since != j->push_sent) {
        j->push_sent = since;
        save_push_cp(j, since, 0);
    }
    step(j);
}

static void push_pre_free(struct sync_job *j)
{
    if (!j->pre) return;
    free(j->pre->page);
    free(j->pre);
    j->pre = NULL;
}

/* The prefetched page is ready (or the read found the end): hand it to
 * step() if it is waiting, else keep it. */
static void push_pre_landed(struct sync_job *j)
{
    j->pre_busy = false;
    if (strcmp(j->status, "running")) {
        push_pre_free(j);
        return;
    }
    if (j->pre_wanted) {
        j->pre_wanted = false;
        step(j);
    }
}

static void push_pre_blobs_done(struct job *jb, struct http_req *r)
{
    struct push_blobs *pb = container_of(jb, struct push_blobs, job);
    struct sync_job *j = pb->j;
    UNUSED(r);
    blob_gate_release(j->srv);
    j->pipeline--;
    j->pre = pb;
    push_pre_landed(j);
}

static void push_pre_read(struct read_job *rj, struct http_req *r)
{
    struct sync_job *j = rj->user;
    UNUSED(r);
    j->pipeline--;
    if (rj->status || strcmp(j->status, "running")) {
        push_pre_landed(j);          /* nothing kept: step() reads it again */
        return;
    }
    if (rj->n == 0) {
        j->pre_end = true;
        j->pre_since = rj->since;
        push_pre_landed(j);
        return;
    }
    struct push_blobs *pb = xcalloc(1, sizeof *pb);
    pb->j = j;
    pb->page = buf_steal(&rj->out, &pb->page_len);
    pb->cp = rj->since;
    pb->more = rj->flag;
    blob_xfer_init(&pb->xfer, j);
    j->pipeline++;
    blob_gate_submit(j->srv, &pb->job, push_blobs_work, push_pre_blobs_done);
}

/* Reads the page after the one being sent (since = its end). */
static void push_prefetch(struct sync_job *j)
{
    struct space *here = spaces_get(j->srv->spaces, j->space);
    if (!here || j->pre_busy || j->pre || j->pre_end) return;
    j->pre_busy = true;
    j->pre_from = j->page_cp;
    j->pipeline++;
    changes_page(j->srv, j->space_id, j->page_cp, here->st.version, SYNC_PAGE,
                 j->peer_instance[0] ? j->peer_instance : NULL, push_pre_read, j);
}

static void push_page_read(struct read_job *rj, struct http_req *r)
{
    struct sync_job *j = rj->user;
    UNUSED(r);
    if (rj->status) {
        finish(j, 500, "reading local changes failed: %s", rj->msg);
        return;
    }
    if (rj->n == 0) {
        push_reached_end(j, rj->since);
        return;
    }
    size_t len;
    char *page = buf_steal(&rj->out, &len);
    struct push_blobs *pb = xcalloc(1, sizeof *pb);
    pb->j = j;
    pb->page = page;
    pb->page_len = len;
    pb->cp = rj->since;
    pb->more = rj->flag;
    blob_xfer_init(&pb->xfer, j);
    blob_gate_submit(j->srv, &pb->job, push_blobs_work, push_blobs_done);
}

/* ---- the state machine --------------------------------------------------- */

static void step(struct sync_job *j)
{
    if (strcmp(j->status, "running")) return;
    if (j->srv->shutting_down) {
        /* a pull with pages on their way ends once they are done with */
        if (j->phase == PH_PULL) pull_pump(j);
        else finish(j, 503, "interrupted: the server is shutting down");
        return;
    }
    switch (j->phase) {
    case PH_STATUS:
        if (!j->peer_uid[0]) {
            send_peer(j, "GET", "/sync/status", NULL, 0, on_status);
            return;
        }
        if (!j->cp_loaded && j->force) {
            /* no checkpoint: both halves start from version 0, and the
             * checkpoints move again as the pages go (a known revision is
             * ignored, so only what is missing is written) */
            j->cp_loaded = true;
        }
        if (!j->cp_loaded) {
            struct read_job *rj = read_job_new();
            rj->user = j;
            read_start_detached(j->srv->store, rj, cp_work, cp_done);
            return;
        }
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
        struct space *sp = spaces_get(j->srv->spaces, j->space);
        j->push_target = sp ? sp->st.version : 0;
        j->phase = j->pull ? PH_PULL : PH_PUSH;
        j->fetch_since = j->cp_pull;
        j->fetch_more = j->cp_pull < j->peer_version;     /* nothing new there: no request */
        if ((j->pull && j->fetch_more) || (j->push && j->push_target > j->cp_push)) save_start_row(j);
        publish(j);
        step(j);
        return;
    case PH_PULL:
        pull_pump(j);                /* also after a retry's wait */
        return;
    case PH_PUSH: {
        struct space *here = spaces_get(j->srv->spaces, j->space);
        if (j->pre_busy) {           /* the next page is on its way */
            j->pre_wanted = true;
            return;
        }
        if ((j->pre || j->pre_end) && j->pre_from != j->push_sent) {
            /* The read-ahead follows the page that was in flight, and the
             * peer did not acknowledge that page (its send failed and this
             * is the retry): sending the read-ahead now would skip the
             * page, and its checkpoint would pass it for good. Drop it
             * (its blobs did reach the peer) and read again from what the
             * peer acknowledged. */
            if (j->pre) {
                j->blobs += j->pre->xfer.moved;
                j->bytes += j->pre->xfer.bytes;
            }
            push_pre_free(j);
            j->pre_end = false;
        }
        if (j->pre) {
            struct push_blobs *pb = j->pre;
            j->pre = NULL;
            push_send(j, pb);
            return;
        }
        if (j->pre_end) {            /* the prefetch found the end */
            j->pre_end = false;
            push_reached_end(j, j->pre_since);
            return;
        }
        if (!here || here->st.version <= j->push_sent) {  /* nothing new here: no request */
            j->phase = PH_DONE;
            step(j);
            return;
        }
        changes_page(j->srv, j->space_id, j->push_sent, here->st.version, SYNC_PAGE,
                     j->peer_instance[0] ? j->peer_instance : NULL, push_page_read, j);
        return;
    }
    case PH_DONE:
        if (j->cp_pending) return;   /* push_cp_done steps again after the last one */
        finish(j, 0, NULL);
        return;
    }
}

static void on_status(void *arg, const struct peer_result *res)
{
    struct sync_job *j = arg;
    if (res->status != 200) {
        peer_failed(j, res, "status");
        return;
    }
    j->tries = 0;
    json_error_t je;
    json_t *v = json_loadb(res->body->data ? res->body->data : "", res->body->len, 0, &je);
    const char *uid = json_name(json_object_get(v, "space_uid"));
    const char *inst = json_name(json_object_get(v, "instance_id"));
    json_t *ver = json_object_get(v, "server_version");
    if (!uid || !json_is_integer(ver) || strlen(uid) >= sizeof j->peer_uid) {
        json_decref(v);
        finish(j, 502, "the peer's /sync/status answer is not snapsync's (no space_uid / server_version)");
        return;
    }
    snprintf(j->peer_uid, sizeof j->peer_uid, "%s", uid);
    snprintf(j->peer_instance, sizeof j->peer_instance, "%s", inst && strlen(inst) == 26 ? inst : "");
    j->peer_version = (uint64_t)json_integer_value(ver);
    json_decref(v);
    if (!strcmp(j->peer_instance, store_instance_id(j->srv->store))) {
        finish(j, 502, "the peer is this instance");
        return;
    }
    step(j);
}

/* ---- API ----------------------------------------------------------------- */

static struct sync_job *sync_job_new(struct server *srv, struct space *sp, const char *url, const char *pspace,
                                     const char *token, const char *dir, const char *actor, const char *remote)
{
    struct sync_job *j = xcalloc(1, sizeof *j);
    j->srv = srv;
    ulid_make(j->id, now_ms_wall());
    snprintf(j->space, sizeof j->space, "%s", sp->st.name);
    snprintf(j->peer_url, sizeof j->peer_url, "%s", url);
    snprintf(j->peer_space, sizeof j->peer_space, "%s", pspace);
    snprintf(j->direction, sizeof j->direction, "%s", dir);
    snprintf(j->actor, sizeof j->actor, "%s", actor);
    snprintf(j->remote, sizeof j->remote, "%s", remote);
    j->token = xstrdup(token);
    j->space_id = sp->st.id;
    j->pull = strcmp(dir, "push") != 0;
    j->push = strcmp(dir, "pull") != 0;
    j->phase = PH_STATUS;
    list_init(&j->ready);
    snprintf(j->status, sizeof j->status, "running");
    j->started_at = now_ms_wall();
    list_insert_tail(&srv->sync->jobs, &j->link);
    srv->sync->n++;
    publish(j);
    return j;
}

static struct sync_job *running_for(struct server *srv, const char *space, const char *url, const char *pspace)
{
    struct list *l;
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = l->next) {
        struct sync_job *j = container_of(l, struct sync_job, link);
        if (!strcmp(j->status, "running") && !strcmp(j->space, space) && !strcmp(j->peer_url, url) &&
            !strcmp(j->peer_space, pspace))
            return j;
    }
    return NULL;
}

void sync_blob_stats(struct server *srv, struct sync_blob_stats *out)
{
    memset(out, 0, sizeof *out);
    struct sync_ctx *sc = srv->sync;
    if (!sc) return;
    out->running = sc->blob_active;
    out->waited = sc->blob_waited;
    for (struct list *l = sc->blob_waiting.next; l != &sc->blob_waiting; l = l->next) out->waiting++;
}

bool sync_space_running(struct server *srv, const char *space)
{
    if (!srv->sync) return false;
    struct list *l;
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = l->next) {
        struct sync_job *j = container_of(l, struct sync_job, link);
        if (!strcmp(j->status, "running") && !strcmp(j->space, space)) return true;
    }
    return false;
}

static struct sync_job *find_job(struct server *srv, const char *space, const char *id)
{
    struct list *l;
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = l->next) {
        struct sync_job *j = container_of(l, struct sync_job, link);
        if (!strcmp(j->id, id) && !strcmp(j->space, space)) return j;
    }
    return NULL;
}

static void waiter_abort(struct http_req *r)
{
    struct sync_job *j = r->ctx;
    if (j && j->waiter == r) {
        j->waiter = NULL;
        http_req_unref(r);
    }
    r->ctx = NULL;
}

/* The peer URL member of a request body, checked and made a base URL
 * (peer_base_url) in out; false after answering 400 (v released). */
static bool url_member_ok(struct http_req *r, json_t *v, const char *member, const char *url, char *out, size_t cap)
{
    char why[160];
    if (!url) {
        json_decref(v);
        http_send_error(r, 400, "invalid_url", NULL, "%s is required: the peer's base address, like "
                        "http://host:7420 or https://host/prefix", member);
        return false;
    }
    if (peer_base_url(url, out, cap, why, sizeof why) < 0) {
        json_decref(v);
        http_send_error(r, 400, "invalid_url", NULL, "%s must be the peer's base address, like http://host:7420 or "
                        "https://host/prefix (a trailing /api/v1 is fine), but %s", member, why);
        return false;
    }
    return true;
}

static const char *const sync_members[] = {"peer_url", "peer_space", "peer_token", "direction", "wait", "force", NULL};

void api_sync_start(struct http_req *r)
{
    struct server *srv = r->srv;
    struct space *sp = api_space(r);
    if (!sp) return;
    json_t *v = api_body_members(r, sync_members);
    if (!v) return;
    const char *url = json_name(json_object_get(v, "peer_url"));
    const char *pspace = json_name(json_object_get(v, "peer_space"));
    const char *token = json_name(json_object_get(v, "peer_token"));
    const char *dir = json_name(json_object_get(v, "direction"));
    json_t *waitv = json_object_get(v, "wait"), *forcev = json_object_get(v, "force");
    bool wait = json_is_true(waitv), force = json_is_true(forcev);
    if (!pspace) pspace = sp->st.name;
    if (!dir) dir = "both";
    char base[PEER_URL_MAX + 1];
    if (!url_member_ok(r, v, "peer_url", url, base, sizeof base)) return;
    url = base;
    const char *bad = NULL;
    if (!name_space_valid(pspace, strlen(pspace))) bad = "peer_space is not a valid space name";
    else if (!token || strlen(token) > 120) bad = "peer_token is required (a key of the peer)";
    else if (strcmp(dir, "pull") && strcmp(dir, "push") && strcmp(dir, "both")) bad = "direction is pull, push or both";
    else if (waitv && !json_is_boolean(waitv)) bad = "wait is true or false";
    else if (forcev && !json_is_boolean(forcev)) bad = "force is true or false";
    if (bad) {
        json_decref(v);
        http_send_error(r, 400, "invalid_body", NULL, "%s", bad);
        return;
    }
    if (running_for(srv, sp->st.name, url, pspace)) {
        json_decref(v);
        http_send_error(r, 409, "sync_in_progress", NULL, "a sync of this space with that peer is running");
        return;
    }
    struct sync_job *j = sync_job_new(srv, sp, url, pspace, token, dir, api_actor(r), r->conn ? r->client : "");
    j->force = force;
    json_decref(v);
    if (wait) {
        j->waiter = r;
        http_req_ref(r);
        r->ctx = j;
        r->on_abort = waiter_abort;
    } else {
        j->accepted = r;             /* 202 once the job's row is stored */
        http_req_ref(r);
        save_start_row(j);
    }
    step(j);
}

/* GET /sync/jobs and /sync/jobs/{id} answer from one source: the stored
 * rows, with the live state of a job this server holds in memory (running,
 * or finished and perhaps not yet stored) in place of its row. A job from
 * before a restart, or one forgotten from memory, is read from its row. */

#define JOB_COLUMNS "id, peer_url, peer_space, direction, status, phase, pulled, pushed, conflicts, blobs, bytes," \
                    " started_at, finished_at, error, errors, error_items"

/* A stored job row as job_json() writes a live one; "requests" is not
 * stored (null). Worker thread. */
static void row_job_json(struct buf *b, sqlite3_stmt *q, const char *space)
{
#define T(i) ((const char *)sqlite3_column_text(q, i))
    buf_puts(b, "{\"id\":");
    json_cstr(b, T(0));
    json_kv_str(b, "space", space);
    json_kv_str(b, "peer_url", T(1));
    json_kv_str(b, "peer_space", T(2));
    json_kv_str(b, "direction", T(3));
    json_kv_str(b, "status", T(4));
    json_kv_str(b, "phase", T(5));
    json_kv_u64(b, "pulled", (uint64_t)sqlite3_column_int64(q, 6));
    json_kv_u64(b, "pushed", (uint64_t)sqlite3_column_int64(q, 7));
    json_kv_u64(b, "conflicts", (uint64_t)sqlite3_column_int64(q, 8));
    json_kv_u64(b, "blobs", (uint64_t)sqlite3_column_int64(q, 9));
    json_kv_u64(b, "bytes", (uint64_t)sqlite3_column_int64(q, 10));
    json_kv_null(b, "requests");
    json_kv_time(b, "started_at", (uint64_t)sqlite3_column_int64(q, 11));
    json_kv_time(b, "finished_at", (uint64_t)sqlite3_column_int64(q, 12));
    json_kv_str(b, "error", T(13));
    json_kv_u64(b, "errors", (uint64_t)sqlite3_column_int64(q, 14));
    /* our own text (error_items_json), stored as it was written */
    json_key(b, "error_items");
    if (T(15) && T(15)[0] == '[') buf_append(b, T(15), (size_t)sqlite3_column_bytes(q, 15));
    else buf_puts(b, "[]");
    buf_putc(b, '}');
#undef T
}

static void job_get_work(sqlite3 *db, struct read_job *rj)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT " JOB_COLUMNS " FROM sync_jobs WHERE space = ? AND id = ?", -1, &q, NULL) !=
        SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_text(q, 1, rj->space, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, rj->id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) row_job_json(&rj->out, q, rj->space);
    else if (rc == SQLITE_DONE) read_fail(rj, 404, "not_found", "no sync job %s in this space", rj->id);
    else read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
    sqlite3_finalize(q);
}

void api_sync_job(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct sync_job *j = find_job(r->srv, sp->st.name, r->match.params.id);
    if (j) {
        struct buf b;
        buf_init(&b);
        job_json(&b, j);
        http_send_json(r, 200, &b);
        return;
    }
    struct read_job *rj = read_job_new();
    snprintf(rj->space, sizeof rj->space, "%s", sp->st.name);
    snprintf(rj->id, sizeof rj->id, "%s", r->match.params.id);
    read_submit(r, rj, job_get_work, NULL);
}

/* A page of stored rows (worker), each written whole into rj->out. */
struct jobs_page {
    size_t n;
    struct jobs_row {
        char id[27];
        size_t off, len;             /* in rj->out; len 0: a job held in memory (j) */
        struct sync_job *j;
    } rows[];
};

static void jobs_work(sqlite3 *db, struct read_job *rj)
{
    struct jobs_page *pg = rj->arg;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT " JOB_COLUMNS " FROM sync_jobs WHERE space = ? AND id < ? ORDER BY id DESC LIMIT ?",
                           -1, &q, NULL) != SQLITE_OK) {
        read_fail(rj, 500, "storage_error", "%s", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_text(q, 1, rj->space, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, rj->cursor[0] ? rj->cursor : "~", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)rj->limit + 1);
    while (pg->n < rj->limit + 1 && sqlite3_step(q) == SQLITE_ROW) {
        struct jobs_row *row = &pg->rows[pg->n++];
        snprintf(row->id, sizeof row->id, "%s", (const char *)sqlite3_column_text(q, 0));
        row->off = rj->out.len;
        row_job_json(&rj->out, q, rj->space);
        row->len = rj->out.len - row->off;
    }
    sqlite3_finalize(q);
}

static int row_newer_first(const void *a, const void *b)
{
    return -strcmp(((const struct jobs_row *)a)->id, ((const struct jobs_row *)b)->id);
}

/* Loop: the stored page merged with the jobs held in memory (their live
 * state wins; one not stored yet is listed too), newest first. Of the
 * stored rows the read took limit + 1, so the first limit of the merge are
 * the page whatever the memory adds. */
static void jobs_done(struct read_job *rj, struct http_req *r)
{
    struct jobs_page *pg = rj->arg;
    struct sync_ctx *sc = r->srv->sync;
    size_t nmem = 0;
    struct list *l;
    for (l = sc->jobs.next; l != &sc->jobs; l = l->next) nmem++;
    struct jobs_row *all = xcalloc(pg->n + nmem + 1, sizeof *all);
    size_t n = 0;
    for (size_t i = 0; i < pg->n; i++) {
        all[n] = pg->rows[i];
        all[n].j = find_job(r->srv, rj->space, all[n].id);
        n++;
    }
    for (l = sc->jobs.next; l != &sc->jobs; l = l->next) {
        struct sync_job *x = container_of(l, struct sync_job, link);
        if (strcmp(x->space, rj->space) || (rj->cursor[0] && strcmp(x->id, rj->cursor) >= 0)) continue;
        bool stored = false;
        for (size_t i = 0; i < pg->n && !stored; i++) stored = !strcmp(pg->rows[i].id, x->id);
        if (stored) continue;
        snprintf(all[n].id, sizeof all[n].id, "%s", x->id);
        all[n].j = x;
        n++;
    }
    qsort(all, n, sizeof *all, row_newer_first);
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"jobs\":[");
    size_t shown = n < rj->limit ? n : rj->limit;
    for (size_t i = 0; i < shown; i++) {
        if (i) buf_putc(&b, ',');
        if (all[i].j) job_json(&b, all[i].j);
        else buf_append(&b, rj->out.data + all[i].off, all[i].len);
    }
    buf_puts(&b, "],\"next_cursor\":");
    if (n > shown) json_cstr(&b, all[shown - 1].id);
    else buf_puts(&b, "null");
    buf_putc(&b, '}');
    free(all);
    http_send_json(r, 200, &b);
}

void api_sync_jobs(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct read_job *rj = read_job_new();
    snprintf(rj->space, sizeof rj->space, "%s", sp->st.name);
    struct list_page lp;
    if (api_paging(r, LIST_CURSOR_ULID, &lp) < 0) {
        free(rj);
        return;
    }
    rj->limit = lp.limit;
    snprintf(rj->cursor, sizeof rj->cursor, "%s", lp.cursor);
    struct jobs_page *pg = xcalloc(1, sizeof *pg + (rj->limit + 1) * sizeof pg->rows[0]);
    rj->arg = pg;
    read_submit(r, rj, jobs_work, jobs_done);
}

/* ---- persistent peers ----------------------------------------------------- */

static void peer_json(struct buf *b, const struct peer_def *p)
{
    buf_puts(b, "{\"name\":");
    json_cstr(b, p->name);
    json_kv_str(b, "url", p->url);
    json_kv_str(b, "space", p->peer_space);
    buf_puts(b, ",\"token\":\"***\"");           /* stored, never shown back */
    json_kv_str(b, "direction", p->direction);
    json_kv_u64(b, "every_seconds", p->every_s);
    json_kv_time(b, "created_at", p->created_at);
    json_kv_str(b, "last_job", p->last_job[0] ? p->last_job : NULL);
    json_kv_str(b, "last_status", p->last_status[0] ? p->last_status : NULL);
    json_kv_str(b, "last_error", p->last_error[0] ? p->last_error : NULL);
    json_kv_time(b, "last_run_at", p->last_run_at);
    json_kv_u64(b, "failures", p->failures);
    json_kv_bool(b, "running", p->running);
    buf_putc(b, '}');
}

static struct peer_def *peer_find(struct server *srv, const char *space, const char *name)
{
    struct list *l;
    for (l = srv->sync->peers.next; l != &srv->sync->peers; l = l->next) {
        struct peer_def *p = container_of(l, struct peer_def, link);
        if (!strcmp(p->space, space) && !strcmp(p->name, name)) return p;
    }
    return NULL;
}

static void peer_free_def(struct peer_def *p)
{
    if (p->token) memset(p->token, 0, strlen(p->token));
    free(p->token);
    free(p);
}

void sync_space_deleted(struct server *srv, const char *space)
{
    if (!srv->sync) return;
    struct list *l, *next;
    for (l = srv->sync->peers.next; l != &srv->sync->peers; l = next) {
        next = l->next;
        struct peer_def *p = container_of(l, struct peer_def, link);
        if (strcmp(p->space, space)) continue;
        list_remove(&p->link);
        peer_free_def(p);
    }
    /* and the finished jobs kept in memory, so that a space made later
     * under the same name does not show them */
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = next) {
        next = l->next;
        struct sync_job *x = container_of(l, struct sync_job, link);
        if (!strcmp(x->space, space) && job_forgettable(x)) job_forget(srv->sync, x);
    }
}

struct peer_op {
    struct wop op;
    struct server *srv;
    struct peer_def def;
    char actor[32], remote[56];
    bool remove, status_only, created;
};

static int peer_apply(struct wtx *tx, struct wop *op)
{
    struct peer_op *po = container_of(op, struct peer_op, op);
    struct peer_def *d = &po->def;
    sqlite3_stmt *st;
    if (po->remove) {
        st = wtx_stmt(tx, "DELETE FROM peers WHERE space_id = ? AND name = ?");
        sqlite3_bind_int64(st, 1, d->space_id);
        sqlite3_bind_text(st, 2, d->name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "deleting the peer failed");
        if (sqlite3_changes(wtx_db(tx)) == 0) return wop_fail(op, 404, "not_found", "no peer named '%s'", d->name);
        return wtx_audit(tx, po->actor, "peer.delete", d->space, d->name, NULL, po->remote) < 0 ? -1 : 0;
    }
    if (po->status_only) {
        st = wtx_stmt(tx, "UPDATE peers SET last_job = ?3, last_status = ?4, last_error = ?5, last_run_at = ?6,"
                          " failures = ?7 WHERE space_id = ?1 AND name = ?2");
        sqlite3_bind_int64(st, 1, d->space_id);
        sqlite3_bind_text(st, 2, d->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, d->last_job, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, d->last_status, -1, SQLITE_STATIC);
        if (d->last_error[0]) sqlite3_bind_text(st, 5, d->last_error, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)d->last_run_at);
        sqlite3_bind_int(st, 7, (int)d->failures);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : wop_fail(op, 500, "storage_error", "saving the peer's status failed");
    }
    st = wtx_stmt(tx, "SELECT 1 FROM peers WHERE space_id = ? AND name = ?");
    sqlite3_bind_int64(st, 1, d->space_id);
    sqlite3_bind_text(st, 2, d->name, -1, SQLITE_STATIC);
    po->created = sqlite3_step(st) != SQLITE_ROW;
    sqlite3_reset(st);
    st = wtx_stmt(tx, "INSERT INTO peers(space_id, space, name, url, peer_space, token, direction, every_seconds,"
                      " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO UPDATE SET url = ?4,"
                      " peer_space = ?5, token = ?6, direction = ?7, every_seconds = ?8, failures = 0");
    sqlite3_bind_int64(st, 1, d->space_id);
    sqlite3_bind_text(st, 2, d->space, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, d->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, d->url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, d->peer_space, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, d->token, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, d->direction, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)d->every_s);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)wtx_now(tx));
    if (sqlite3_step(st) != SQLITE_DONE) return wop_fail(op, 500, "storage_error", "saving the peer failed");
    d->created_at = wtx_now(tx);
    struct buf meta;
    buf_init(&meta);
    buf_putc(&meta, '{');
    json_kv_str(&meta, "url", d->url);
    json_kv_str(&meta, "direction", d->direction);
    json_kv_u64(&meta, "every_seconds", d->every_s);
    buf_putc(&meta, '}');
    int arc = wtx_audit(tx, po->actor, "peer.put", d->space, d->name, meta.data, po->remote);
    buf_free(&meta);
    return arc < 0 ? -1 : 0;
}

static void peer_op_done(struct wop *op, struct http_req *r)
{
    struct peer_op *po = container_of(op, struct peer_op, op);
    struct server *srv = po->srv;
    struct peer_def *d = &po->def;
    if (!op->status && !po->status_only && srv->sync) {
        struct peer_def *cur = peer_find(srv, d->space, d->name);
        if (po->remove) {
            if (cur) {
                list_remove(&cur->link);
                peer_free_def(cur);
            }
        } else {
            if (!cur) {
                cur = xcalloc(1, sizeof *cur);
                list_insert_tail(&srv->sync->peers, &cur->link);
                cur->created_at = d->created_at;
            }
            free(cur->token);
            struct list link = cur->link;
            bool running = cur->running;
            char lj[27], ls[16], le[300];
            memcpy(lj, cur->last_job, sizeof lj);
            memcpy(ls, cur->last_status, sizeof ls);
            memcpy(le, cur->last_error, sizeof le);
            uint64_t created = cur->created_at ? cur->created_at : d->created_at, lr = cur->last_run_at;
            *cur = *d;
            cur->link = link;
            cur->token = xstrdup(d->token);
            cur->running = running;
            cur->created_at = created;
            cur->last_run_at = lr;
            memcpy(cur->last_job, lj, sizeof lj);
            memcpy(cur->last_status, ls, sizeof ls);
            memcpy(cur->last_error, le, sizeof le);
            cur->failures = 0;
            cur->next_run_ms = uv_now(srv->loop) + (cur->every_s ? 1000 : 0);
        }
    }
    if (r) {
        if (op->status) api_send_wop_error(r, op);
        else if (po->remove) http_send_empty(r, 204);
        else {
            struct buf b;
            buf_init(&b);
            struct peer_def *cur = peer_find(r->srv, d->space, d->name);
            peer_json(&b, cur ? cur : d);
            http_send_json(r, po->created ? 201 : 200, &b);
        }
    }
    if (d->token) memset(d->token, 0, strlen(d->token));
    free(d->token);
    free(po);
}

static const char *const peer_members[] = {"url", "space", "token", "direction", "every_seconds", NULL};

void api_peer_put(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    json_t *v = api_body_members(r, peer_members);
    if (!v) return;
    const char *url = json_name(json_object_get(v, "url"));
    const char *pspace = json_name(json_object_get(v, "space"));
    const char *token = json_name(json_object_get(v, "token"));
    const char *dir = json_name(json_object_get(v, "direction"));
    json_t *every = json_object_get(v, "every_seconds");
    if (!pspace) pspace = sp->st.name;
    if (!dir) dir = "both";
    char base[PEER_URL_MAX + 1];
    if (!url_member_ok(r, v, "url", url, base, sizeof base)) return;
    url = base;
    const char *bad = NULL;
    if (!name_space_valid(pspace, strlen(pspace))) bad = "space is not a valid space name";
    else if (!token || strlen(token) > 120) bad = "token is required (a key of the peer)";
    else if (strcmp(dir, "pull") && strcmp(dir, "push") && strcmp(dir, "both")) bad = "direction is pull, push or both";
    else if (every && (!json_is_integer(every) || json_integer_value(every) < 0 || json_integer_value(every) > 86400 * 30))
        bad = "every_seconds is a whole number of seconds (0 = only on demand)";
    if (bad) {
        json_decref(v);
        http_send_error(r, 400, "invalid_body", NULL, "%s", bad);
        return;
    }
    struct peer_op *po = xcalloc(1, sizeof *po);
    po->srv = r->srv;
    struct peer_def *d = &po->def;
    snprintf(d->space, sizeof d->space, "%s", sp->st.name);
    snprintf(d->name, sizeof d->name, "%s", r->match.params.peer);
    snprintf(d->url, sizeof d->url, "%s", url);
    snprintf(d->peer_space, sizeof d->peer_space, "%s", pspace);
    snprintf(d->direction, sizeof d->direction, "%s", dir);
    snprintf(po->actor, sizeof po->actor, "%s", api_actor(r));
    if (r->conn) snprintf(po->remote, sizeof po->remote, "%s", r->client);
    d->token = xstrdup(token);
    d->space_id = sp->st.id;
    d->every_s = every ? (uint64_t)json_integer_value(every) : 0;
    json_decref(v);
    if (api_write(r, &po->op, peer_apply, peer_op_done) < 0) {
        free(d->token);
        free(po);
    }
}

void api_peer_delete(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct peer_op *po = xcalloc(1, sizeof *po);
    po->srv = r->srv;
    po->remove = true;
    snprintf(po->def.space, sizeof po->def.space, "%s", sp->st.name);
    snprintf(po->def.name, sizeof po->def.name, "%s", r->match.params.peer);
    snprintf(po->actor, sizeof po->actor, "%s", api_actor(r));
    if (r->conn) snprintf(po->remote, sizeof po->remote, "%s", r->client);
    po->def.space_id = sp->st.id;
    if (api_write(r, &po->op, peer_apply, peer_op_done) < 0) free(po);
}

static int peer_by_name(const void *a, const void *b)
{
    return strcmp((*(struct peer_def *const *)a)->name, (*(struct peer_def *const *)b)->name);
}

/* By name, paged like every list: the cursor is the last name shown. */
void api_peers_list(struct http_req *r)
{
    struct space *sp = api_space(r);
    if (!sp) return;
    struct list_page pg;
    if (api_paging(r, LIST_CURSOR_PEER, &pg) < 0) return;
    size_t n = 0, cap = 16;
    struct peer_def **v = xmalloc(cap * sizeof *v);
    for (struct list *l = r->srv->sync->peers.next; l != &r->srv->sync->peers; l = l->next) {
        struct peer_def *p = container_of(l, struct peer_def, link);
        if (strcmp(p->space, sp->st.name) || (pg.cursor[0] && strcmp(p->name, pg.cursor) <= 0)) continue;
        if (n == cap) v = xrealloc(v, (cap *= 2) * sizeof *v);
        v[n++] = p;
    }
    qsort(v, n, sizeof *v, peer_by_name);
    size_t shown = n < pg.limit ? n : (size_t)pg.limit;
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"peers\":[");
    for (size_t i = 0; i < shown; i++) {
        if (i) buf_putc(&b, ',');
        peer_json(&b, v[i]);
    }
    buf_puts(&b, "],\"next_cursor\":");
    if (n > shown) json_cstr(&b, v[shown - 1]->name);
    else buf_puts(&b, "null");
    buf_putc(&b, '}');
    free(v);
    http_send_json(r, 200, &b);
}

/* a job for a persistent peer ended: remember how, and when to try again
 * (a failing peer backs off: every * 2^failures, at most an hour) */
static void peer_job_finished(struct sync_job *j)
{
    struct server *srv = j->srv;
    struct peer_def *p = peer_find(srv, j->space, j->peer_name);
    if (!p) return;
    p->running = false;
    snprintf(p->last_job, sizeof p->last_job, "%s", j->id);
    snprintf(p->last_status, sizeof p->last_status, "%s", j->status);
    snprintf(p->last_error, sizeof p->last_error, "%s", j->error);
    p->last_run_at = j->finished_at;
    bool ok = !strcmp(j->status, "completed");
    p->failures = ok ? 0 : p->failures + 1;
    uint64_t every = p->every_s ? p->every_s * 1000 : 0;
    uint64_t wait = every;
    if (!ok && every) {
        unsigned sh = p->failures < 12 ? p->failures : 12;
        wait = every << sh;
        if (wait > 3600000) wait = 3600000;
    }
    p->next_run_ms = uv_now(srv->loop) + wait;
    if (!ok) log_warn("peer_failing", "\"space\":\"%s\",\"peer\":\"%s\",\"failures\":%u,\"retry_in_ms\":%llu",
                      p->space, p->name, p->failures, (unsigned long long)wait);
    struct peer_op *po = xcalloc(1, sizeof *po);
    po->srv = srv;
    po->status_only = true;
    po->def = *p;
    po->def.token = NULL;
    if (writer_submit(srv->writer, &po->op, NULL, peer_apply, peer_op_done) < 0) free(po);
}

static void on_tick(uv_timer_t *t)
{
    struct server *srv = t->data;
    if (srv->shutting_down) return;
    uint64_t now = uv_now(srv->loop);
    struct list *l;
    for (l = srv->sync->peers.next; l != &srv->sync->peers; l = l->next) {
        struct peer_def *p = container_of(l, struct peer_def, link);
        if (!p->every_s || p->running || now < p->next_run_ms) continue;
        struct space *sp = spaces_get(srv->spaces, p->space);
        if (!sp || running_for(srv, p->space, p->url, p->peer_space)) continue;
        struct sync_job *j = sync_job_new(srv, sp, p->url, p->peer_space, p->token, p->direction, "scheduler", "");
        snprintf(j->peer_name, sizeof j->peer_name, "%s", p->name);
        p->running = true;
        step(j);
    }
}

static void peers_load_work(sqlite3 *db, struct read_job *rj)
{
    struct server *srv = rj->user;
    UNUSED(srv);
    sqlite3_stmt *q;
    /* test hook: a slow startup load (the server must not listen before it) */
    uint64_t delay = env_ms("SNAPSYNC_TEST_LOAD_DELAY_MS");
    if (delay) uv_sleep((unsigned)delay);
    if (sqlite3_prepare_v2(db,
                           "SELECT space_id, space, name, url, peer_space, token, direction, every_seconds, created_at,"
                           " last_job, last_status, last_error, last_run_at, failures FROM peers",
                           -1, &q, NULL) != SQLITE_OK)
        return;
    struct list *out = xcalloc(1, sizeof *out);
    list_init(out);
    while (sqlite3_step(q) == SQLITE_ROW) {
        struct peer_def *p = xcalloc(1, sizeof *p);
#define T(i) (sqlite3_column_text(q, i) ? (const char *)sqlite3_column_text(q, i) : "")
        p->space_id = sqlite3_column_int64(q, 0);
        snprintf(p->space, sizeof p->space, "%s", T(1));
        snprintf(p->name, sizeof p->name, "%s", T(2));
        char why[160];
        /* a row stored before URLs were checked: its base form if it has one */
        if (peer_base_url(T(3), p->url, sizeof p->url, why, sizeof why) < 0) snprintf(p->url, sizeof p->url, "%s", T(3));
        snprintf(p->peer_space, sizeof p->peer_space, "%s", T(4));
        p->token = xstrdup(T(5));
        snprintf(p->direction, sizeof p->direction, "%s", T(6));
        p->every_s = (uint64_t)sqlite3_column_int64(q, 7);
        p->created_at = (uint64_t)sqlite3_column_int64(q, 8);
        snprintf(p->last_job, sizeof p->last_job, "%s", T(9));
        snprintf(p->last_status, sizeof p->last_status, "%s", T(10));
        snprintf(p->last_error, sizeof p->last_error, "%s", T(11));
        p->last_run_at = (uint64_t)sqlite3_column_int64(q, 12);
        p->failures = (unsigned)sqlite3_column_int(q, 13);
#undef T
        list_insert_tail(out, &p->link);
    }
    sqlite3_finalize(q);
    rj->arg = out;
}

static void peers_loaded(struct read_job *rj, struct http_req *r)
{
    struct server *srv = rj->user;
    struct list *in = rj->arg;
    UNUSED(r);
    srv->loading--;
    if (!in) return;
    while (!list_empty(in)) {
        struct peer_def *p = container_of(in->next, struct peer_def, link);
        list_remove(&p->link);
        if (!srv->sync) { peer_free_def(p); continue; }
        p->next_run_ms = uv_now(srv->loop) + 1000;
        list_insert_tail(&srv->sync->peers, &p->link);
    }
    /* rj->arg (the list head) is freed with the job */
}

/* ---- life ---------------------------------------------------------------- */

int sync_recover(void *dbp, char *err, size_t errlen)
{
    sqlite3 *db = dbp;
    sqlite3_stmt *st;
    /* finished now, in ms (never before it started, whatever the clock did) */
    if (sqlite3_prepare_v2(db,
                           "UPDATE sync_jobs SET status = 'failed', error = 'interrupted: the server stopped while it"
                           " ran', finished_at = max(started_at, ?1) WHERE status = 'running'",
                           -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "marking interrupted sync jobs failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)now_ms_wall());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "marking interrupted sync jobs failed: %s", sqlite3_errmsg(db));
        return -1;
    }
    int n = sqlite3_changes(db);
    if (n) log_warn("sync_jobs_recovered", "\"interrupted\":%d", n);
    return 0;
}

static void on_shutdown(struct server *srv, void *arg)
{
    UNUSED(arg);
    /* transfers in flight end now (their callbacks see an error and the
     * jobs finish as failed: "interrupted"); retries waiting on a timer stop */
    struct list *l;
    for (l = srv->sync->jobs.next; l != &srv->sync->jobs; l = l->next) {
        struct sync_job *j = container_of(l, struct sync_job, link);
        if (j->retry_init && uv_is_active((uv_handle_t *)&j->retry) && !strcmp(j->status, "running")) {
            uv_timer_stop(&j->retry);
            if (j->phase == PH_PULL && j->pipeline)
                pull_stop(j, 503, "interrupted: the server is shutting down");    /* finishes when drained */
            else finish(j, 503, "interrupted: the server is shutting down");
        }
    }
    peer_abort_all(srv);
}

void sync_init(struct server *srv)
{
    struct sync_ctx *sc = xcalloc(1, sizeof *sc);
    list_init(&sc->jobs);
    list_init(&sc->peers);
    list_init(&sc->blob_waiting);
    sc->blob_cap = srv->cfg->workers / 2 ? (unsigned)(srv->cfg->workers / 2) : 1;
    sc->timeout_ms = env_ms("SNAPSYNC_TEST_PEER_TIMEOUT_MS");     /* test hook */
    if (!sc->timeout_ms) sc->timeout_ms = SYNC_TIMEOUT_MS;
    srv->sync = sc;
    server_add_shutdown_hook(srv, on_shutdown, sc);
    uv_timer_init(srv->loop, &sc->tick);
    sc->tick.data = srv;
    uv_timer_start(&sc->tick, on_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&sc->tick);
    sc->tick_on = true;
    struct read_job *rj = read_job_new();
    rj->user = srv;
    srv->loading++;
    read_start_detached(srv->store, rj, peers_load_work, peers_loaded);
}

static void tick_closed(uv_handle_t *h)
{
    free(container_of((uv_timer_t *)h, struct sync_ctx, tick));
}

static void retry_closed(uv_handle_t *h)
{
    job_free(h->data);
}

void sync_free(struct server *srv)
{
    struct sync_ctx *sc = srv->sync;
    if (!sc) return;
    while (!list_empty(&sc->jobs)) {
        struct sync_job *j = container_of(sc->jobs.next, struct sync_job, link);
        list_remove(&j->link);
        push_pre_free(j);
        if (j->waiter) http_req_unref(j->waiter);
        if (j->accepted) http_req_unref(j->accepted);
        if (j->retry_init) uv_close((uv_handle_t *)&j->retry, retry_closed);
        else job_free(j);
    }
    while (!list_empty(&sc->peers)) {
        struct peer_def *p = container_of(sc->peers.next, struct peer_def, link);
        list_remove(&p->link);
        peer_free_def(p);
    }
    while (!list_empty(&sc->blob_waiting)) {    /* empty once every job ended */
        struct blob_wait *w = container_of(sc->blob_waiting.next, struct blob_wait, link);
        list_remove(&w->link);
        free(w);
    }
    srv->sync = NULL;
    if (sc->tick_on) uv_close((uv_handle_t *)&sc->tick, tick_closed);
    else free(sc);
}
