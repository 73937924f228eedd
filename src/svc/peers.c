/* peers.c - persistent peers (see peers.h): the registry of a space's
 * named peers, kept in memory by the loop and stored in table peers, and
 * the schedule that starts their sync jobs.
 */
#include "svc/peers.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "net/peer.h"
#include "net/server.h"
#include "store/read.h"
#include "store/spaces.h"
#include "svc/sync.h"

struct peer_def *peer_find(struct server *srv, const char *space, const char *name)
{
    struct list *l;
    for (l = srv->sync->peers.next; l != &srv->sync->peers; l = l->next) {
        struct peer_def *p = container_of(l, struct peer_def, link);
        if (!strcmp(p->space, space) && !strcmp(p->name, name)) return p;
    }
    return NULL;
}

void peer_def_free(struct peer_def *p)
{
    if (p->token) memset(p->token, 0, strlen(p->token));
    free(p->token);
    free(p);
}


int peer_apply(struct wtx *tx, struct wop *op)
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


void peer_op_committed(struct peer_op *po)
{
    struct server *srv = po->srv;
    struct peer_def *d = &po->def;
    struct wop *op = &po->op;
    if (!op->err.status && !po->status_only && srv->sync) {
        struct peer_def *cur = peer_find(srv, d->space, d->name);
        if (po->remove) {
            if (cur) {
                list_remove(&cur->link);
                peer_def_free(cur);
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
}

void peer_op_free(struct peer_op *po)
{
    struct peer_def *d = &po->def;
    if (d->token) memset(d->token, 0, strlen(d->token));
    free(d->token);
    free(po);
}

/* a job's outcome, stored: nothing to answer */
static void peer_status_done(struct wop *op, struct http_req *r)
{
    UNUSED(r);
    peer_op_free(container_of(op, struct peer_op, op));
}

void peers_space_deleted(struct server *srv, const char *space)
{
    struct list *l, *next;
    for (l = srv->sync->peers.next; l != &srv->sync->peers; l = next) {
        next = l->next;
        struct peer_def *p = container_of(l, struct peer_def, link);
        if (strcmp(p->space, space)) continue;
        list_remove(&p->link);
        peer_def_free(p);
    }
}

/* a job for a persistent peer ended: remember how, and when to try again
 * (a failing peer backs off: every * 2^failures, at most an hour) */
void peers_job_finished(struct sync_job *j)
{
    struct server *srv = j->srv;
    struct peer_def *p = peer_find(srv, j->space, j->peer_name);
    if (!p) return;
    p->running = false;
    snprintf(p->last_job, sizeof p->last_job, "%s", j->id);
    snprintf(p->last_status, sizeof p->last_status, "%s", sync_status_name(j->status));
    snprintf(p->last_error, sizeof p->last_error, "%s", j->error);
    p->last_run_at = j->finished_at;
    bool ok = j->status == SYNC_COMPLETED;
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
    if (writer_submit(srv->writer, &po->op, NULL, peer_apply, peer_status_done) < 0) free(po);
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
        if (!sp || sync_running_for(srv, p->space, p->url, p->peer_space)) continue;
        struct sync_params sp_params = {.url = p->url, .peer_space = p->peer_space, .token = p->token,
                                         .direction = p->direction, .actor = "scheduler", .remote = "",
                                         .peer_name = p->name};
        struct sync_job *j = sync_job_new(srv, sp, &sp_params);
        p->running = true;
        sync_job_run(j);
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
        if (!srv->sync) { peer_def_free(p); continue; }
        p->next_run_ms = uv_now(srv->loop) + 1000;
        list_insert_tail(&srv->sync->peers, &p->link);
    }
    /* rj->arg (the list head) is freed with the job */
}


void peers_start(struct server *srv)
{
    struct sync_ctx *sc = srv->sync;
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

void peers_free(struct server *srv)
{
    struct sync_ctx *sc = srv->sync;
    while (!list_empty(&sc->peers)) {
        struct peer_def *p = container_of(sc->peers.next, struct peer_def, link);
        list_remove(&p->link);
        peer_def_free(p);
    }
}
