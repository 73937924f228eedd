/* main.c - commands, start-up and the shutdown order.
 *
 *   serve    parse options, prepare the data dir, lock it (one server per
 *            data dir), open the database, run the loop until
 *            SIGTERM/SIGINT, then close in reverse order
 *   keys     create, list, revoke keys in the database (beside a running
 *            server too: SQLite's locking orders the writes)
 *   --version, --help
 *
 * Start-up runs on the main thread before the loop, so it may block (mkdir,
 * migrations); once uv_run starts, this thread is the loop thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "svc/auth.h"
#include "svc/blobs.h"
#include "core/cli.h"
#include "core/json.h"
#include "core/names.h"
#include "svc/snapshot.h"
#include "svc/remote.h"
#include "store/spaces.h"
#include "core/counters.h"
#include "net/peer.h"
#include "svc/sse.h"
#include "svc/sync.h"
#include "store/writer.h"
#include "config.h"
#include "api/api.h"
#include "api/metrics.h"
#include "api/util.h"
#include "net/http.h"
#include "core/log.h"
#include "net/server.h"
#include "store/store.h"
#include <sqlite3.h>

static void usage(FILE *f)
{
    fprintf(f,
            "snapsync %s - snapshot and sync server\n\n"
            "usage:\n"
            "  snapsync serve [--listen 127.0.0.1:7420] [--data ./snapsync-data] [options]\n"
            "  snapsync serve --help        all serve options and their environment variables\n"
            "  snapsync keys create --data DIR --role admin|operator|writer|reader [--space S]... [--name N]\n"
            "  snapsync keys list --data DIR\n"
            "  snapsync keys revoke ID --data DIR\n"
            "  snapsync verify FILE.ndjson.gz   offline integrity check of a snapshot file\n"
            "  snapsync remote list [--space S] [--instance I] [--remote URL ...]   what the off-site remote holds\n"
            "  snapsync remote fetch KEY -o FILE [--remote URL ...]   download, decrypt and verify one snapshot\n"
            "  snapsync --version\n"
            "  snapsync --help\n",
            SNAPSYNC_VERSION);
}

static int prepare_data_dir(const char *dir)
{
    int rc = mkdir_p(dir, 0700);
    if (rc < 0) {
        fprintf(stderr, "snapsync: cannot create data directory %s: %s\n", dir, strerror(-rc));
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "snapsync: %s is not a directory\n", dir);
        return -1;
    }
    return 0;
}

/* One data directory, one server: an exclusive flock on DATA/serve.lock,
 * held by the returned descriptor until the process exits (the kernel drops
 * it however the process ends, so a kill -9 leaves no stale lock). Taken
 * before anything else in the directory is written; a second `serve` gets
 * one line naming the holder's pid and exit 1. `snapsync keys` does not
 * take it. Returns the descriptor (CLOEXEC), or -1 after printing why.
 * Main thread, before the loop. */
static int lock_data_dir(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/serve.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "snapsync: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char pid[24] = "";
        if (e == EWOULDBLOCK) {
            ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
            pid[n > 0 ? n : 0] = '\0';
            pid[strspn(pid, "0123456789")] = '\0';
            fprintf(stderr, "snapsync: data directory %s is in use by another snapsync serve%s%s%s; "
                            "stop it or use another --data\n",
                    dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
        } else {
            fprintf(stderr, "snapsync: cannot lock %s: %s\n", path, strerror(e));
        }
        close(fd);
        return -1;
    }
    /* the holder's pid, for the message above and for operators */
    char line[24];
    int len = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)len, 0) != len)
        fprintf(stderr, "snapsync: cannot write %s: %s\n", path, strerror(errno));   /* the lock holds anyway */
    return fd;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    UNUSED(arg);
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* stored state the loop keeps (peers, each space's last snapshot) is read on
 * the pool at startup; turn the loop until it is all in, then listen, so no
 * request ever sees it half loaded */
static void wait_loaded(struct server *srv)
{
    while (srv->loading)
        if (!uv_run(srv->loop, UV_RUN_ONCE) && srv->loading) break;   /* nothing left to wait on */
}

/* The writer reports to the layers above through hooks: commits to the SSE
 * hub and live feeds, a dropped space's blob references to blobs. */
static void writer_committed(void *arg, const struct change_rec *c, size_t n, const struct space_stats *spaces,
                             size_t nspaces)
{
    sse_changes_committed(arg, c, n, spaces, nspaces);
}
static uint64_t req_body_bytes(const struct http_req *r) { return r->body_seen; }

static int start_writer(struct server *srv, char *err, size_t errlen)
{
    const struct writer_hooks hooks = {
        .space_drop = blobs_space_drop,
        .on_commit = writer_committed,
        .commit_arg = srv,
        .req_bytes = req_body_bytes,
    };
    return writer_start(&srv->writer, srv->loop, srv->spaces, &srv->jobs, &hooks, store_db_path(srv->store),
                        srv->cfg->durability, err, errlen);
}

/* What the HTTP core asks of the layers above it (net/http.h): access
 * control from auth, the request counters from api/metrics.c. */
static const struct http_hooks http_hooks = {
    .access = auth_check_request,
    .access_resolve = auth_resolve_unknown,
    .denied = auth_audit_denied,
    .done = api_metrics_request_done,
};

/* Startup on the data directory: the database (migrated), the admin key
 * on first start, recovery of what a crash left half done (snapshots, sync
 * jobs, blobs), and the keys. Returns 0, or -1 after logging why (the store
 * closed again). Main thread, before the loop. */
static int open_data(const struct config *cfg, struct store **stp, struct key **keys, size_t *nkeys)
{
    char err[512];
    int rc;
    if (store_open(cfg->data_dir, cfg->durability, stp, err, sizeof err) < 0) {
        log_error("store_open_failed", "\"error\":\"%s\"", err);
        return -1;
    }
    struct store *st = *stp;
    log_info("store_open", "\"path\":\"%s\",\"schema_version\":%d,\"instance_id\":\"%s\",\"durability\":\"%s\"",
             store_db_path(st), store_schema_version(st), store_instance_id(st),
             cfg->durability == DURABILITY_FULL ? "full" : "normal");
    char keypath[1200];
    rc = auth_bootstrap_admin(store_startup_db(st), cfg->data_dir, keypath, sizeof keypath, err, sizeof err);
    if (rc < 0) {
        log_error("admin_key_failed", "\"error\":\"%s\"", err);
        store_close(st);
        return -1;
    }
    if (rc == 1) log_info("admin_key_created", "\"path\":\"%s\",\"mode\":\"0600\"", keypath);
    if (snap_recover(cfg->data_dir, store_startup_db(st), err, sizeof err) < 0) {
        log_error("snapshot_recovery_failed", "\"error\":\"%s\"", err);
        store_close(st);
        return -1;
    }
    if (sync_recover(store_startup_db(st), err, sizeof err) < 0) {
        log_error("sync_recovery_failed", "\"error\":\"%s\"", err);
        store_close(st);
        return -1;
    }
    if (blobs_recover(cfg->data_dir, store_startup_db(st), err, sizeof err) < 0) {
        log_error("blob_recovery_failed", "\"error\":\"%s\"", err);
        store_close(st);
        return -1;
    }
    if (keys_load(store_startup_db(st), keys, nkeys) < 0) {
        log_error("keys_load_failed", "\"error\":\"%s\"", sqlite3_errmsg(store_startup_db(st)));
        store_close(st);
        return -1;
    }

    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    static struct config cfg;
    static struct server srv;
    static struct rtarget remote;
    char err[512];
    cfg_defaults(&cfg);
    int rc = cfg_parse_serve(&cfg, argc, argv);
    if (rc == 1) return 0;
    if (rc != 0) return 2;
    log_set_level((enum log_level)cfg.log_level);
    if (remote_config(&cfg, &remote, err, sizeof err) < 0) {
        fprintf(stderr, "snapsync: %s\n", err);
        return 2;
    }

    if (!getenv("UV_THREADPOOL_SIZE")) {
        char n[16];
        snprintf(n, sizeof n, "%llu", (unsigned long long)cfg.workers);
        setenv("UV_THREADPOOL_SIZE", n, 1);
    }
    signal(SIGPIPE, SIG_IGN);
    if (prepare_data_dir(cfg.data_dir) < 0) return 1;
    if (lock_data_dir(cfg.data_dir) < 0) return 1;   /* the descriptor stays open until exit */

    struct store *st = NULL;
    struct key *keys = NULL;
    size_t nkeys = 0;
    if (open_data(&cfg, &st, &keys, &nkeys) < 0) return 1;

    uv_loop_t loop;
    uv_loop_init(&loop);
    /* time blocked in poll: server.c tells loop stalls from waiting with it */
    if ((rc = uv_loop_configure(&loop, UV_METRICS_IDLE_TIME)) < 0)
        log_warn("loop_metrics_unavailable", "\"error\":\"%s\"", uv_strerror(rc));
    log_attach_loop(&loop);
    srv.store = st;
    srv.loop = &loop;
    job_pool_init(&srv.jobs, &loop, &http_job_hooks);
    srv.cfg = &cfg;
    api_routes_init(&srv.router);
    srv.hooks = &http_hooks;
    auth_init(&srv, keys, nkeys);
    srv.metrics = metrics_new();
    srv.spaces = spaces_new();
    blobs_init(&srv);
    if (start_writer(&srv, err, sizeof err) < 0) {
        log_error("writer_start_failed", "\"error\":\"%s\"", err);
        rc = 1;
    } else if (api_read_attach(&srv), sse_init(&srv), auth_start_refresh(&srv), snap_init(&srv), peer_init(&srv) < 0 ||
               (sync_init(&srv), remote_init(&srv, &remote), wait_loaded(&srv), server_start(&srv, &loop, &cfg) < 0)) {
        server_shutdown(&srv);
        uv_run(&loop, UV_RUN_DEFAULT);
        rc = 1;
    } else {
        uv_run(&loop, UV_RUN_DEFAULT);
        rc = 0;
        log_info("stopped", "\"requests\":%llu", (unsigned long long)srv.stats.requests);
    }
    writer_stop(srv.writer), srv.writer = NULL;     /* last completions may still touch sync jobs */
    sync_free(&srv);
    remote_free(&srv);
    peer_free(&srv);
    snap_free(&srv);
    sse_free(&srv);
    auth_free(&srv);
    log_detach_loop();
    uv_run(&loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&loop) == UV_EBUSY) {
        uv_walk(&loop, walk_close, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    server_free(&srv);
    spaces_free(srv.spaces), srv.spaces = NULL;
    blobs_free(&srv);
    metrics_free(srv.metrics);
    srv.metrics = NULL;
    store_close(st);
    return rc;
}

/* ---- snapsync keys ------------------------------------------------------ */

static int keys_usage(void)
{
    fprintf(stderr, "usage: snapsync keys create --data DIR --role admin|operator|writer|reader [--space S]... [--name N]\n"
                    "       snapsync keys list --data DIR\n"
                    "       snapsync keys revoke ID --data DIR\n");
    return 2;
}

static int cmd_keys(int argc, char **argv)
{
    if (argc < 1) return keys_usage();
    const char *sub = argv[0], *data = NULL, *role = NULL, *name = "", *id = NULL;
    const char *spaces[KEY_MAX_SPACES];
    int nspaces = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--data") && v) { data = v; i++; }
        else if (!strcmp(a, "--role") && v) { role = v; i++; }
        else if (!strcmp(a, "--name") && v) { name = v; i++; }
        else if (!strcmp(a, "--space") && v) {
            if (nspaces == KEY_MAX_SPACES) { fprintf(stderr, "snapsync: at most %d --space\n", KEY_MAX_SPACES); return 2; }
            if (strcmp(v, "*") && !name_space_valid(v, strlen(v))) {
                fprintf(stderr, "snapsync: invalid space name '%s'\n", v);
                return 2;
            }
            spaces[nspaces++] = v;
            i++;
        } else if (a[0] != '-' && !id) id = a;
        else { fprintf(stderr, "snapsync: unexpected argument '%s'\n", a); return keys_usage(); }
    }
    if (!data) { fprintf(stderr, "snapsync: --data DIR is required\n"); return 2; }
    char path[1100], err[512];
    snprintf(path, sizeof path, "%s/snapsync.db", data);
    struct stat sb;
    if (strcmp(sub, "create") && stat(path, &sb) < 0) {
        fprintf(stderr, "snapsync: no database at %s\n", path);
        return 1;
    }
    if (prepare_data_dir(data) < 0) return 1;
    struct store *st = NULL;
    if (store_open(data, DURABILITY_FULL, &st, err, sizeof err) < 0) {
        fprintf(stderr, "snapsync: %s\n", err);
        return 1;
    }
    sqlite3 *db = store_startup_db(st);
    int rc = 0;
    if (!strcmp(sub, "create")) {
        struct key k;
        memset(&k, 0, sizeof k);
        if (role_parse(role, &k.role) < 0) {
            fprintf(stderr, "snapsync: --role must be admin, operator, writer or reader\n");
            rc = 2;
            goto out;
        }
        if (strlen(name) > 64) { fprintf(stderr, "snapsync: --name is at most 64 bytes\n"); rc = 2; goto out; }
        snprintf(k.name, sizeof k.name, "%s", name);
        if (nspaces == 0 || k.role == ROLE_ADMIN) k.all_spaces = true;
        for (int i = 0; i < nspaces; i++) {
            if (!strcmp(spaces[i], "*")) k.all_spaces = true;
            else if (!k.all_spaces) snprintf(k.spaces[k.nspaces++], 64, "%s", spaces[i]);
        }
        if (k.all_spaces) k.nspaces = 0;
        char token[TOKEN_LEN + 1];
        token_make(token, k.hash);
        if (key_create_audited(db, &k, "cli", err, sizeof err) < 0) {
            fprintf(stderr, "snapsync: %s\n", err);
            rc = 1;
            goto out;
        }
        struct buf b;
        buf_init(&b);
        key_json(&b, &k);
        b.len--;                                     /* reopen the object to add the token */
        buf_puts(&b, ",\"token\":");
        json_cstr(&b, token);
        buf_puts(&b, "}\n");
        fwrite(b.data, 1, b.len, stdout);
        buf_free(&b);
    } else if (!strcmp(sub, "list")) {
        struct key *keys = NULL;
        size_t n = 0;
        if (keys_load(db, &keys, &n) < 0) { fprintf(stderr, "snapsync: cannot read keys\n"); rc = 1; goto out; }
        struct buf b;
        buf_init(&b);
        for (size_t i = 0; i < n; i++) {
            key_json(&b, &keys[i]);
            buf_putc(&b, '\n');
        }
        fwrite(b.data ? b.data : "", 1, b.len, stdout);
        buf_free(&b);
        free(keys);
    } else if (!strcmp(sub, "revoke")) {
        if (!id || !ulid_valid(id, strlen(id))) { fprintf(stderr, "snapsync: keys revoke needs a key id\n"); rc = 2; goto out; }
        int r = key_revoke_audited(db, id, "cli", err, sizeof err);
        if (r < 0) { fprintf(stderr, "snapsync: %s\n", err); rc = 1; }
        else if (r == 0) { fprintf(stderr, "snapsync: no active key %s\n", id); rc = 1; }
        else printf("{\"id\":\"%s\",\"revoked\":true}\n", id);
    } else {
        rc = keys_usage();
    }
out:
    store_close(st);
    return rc;
}

/* ---- snapsync remote: list and fetch without a server ------------------- *
 * The same engine as the server's (svc/remote.h) on a loop of its own: a
 * bare server struct with the pool and the curl multi, no store, no
 * listener. For a machine where nothing runs yet (disaster recovery). */

struct remote_cli {
    int rc;
    bool done;
};

static void cli_listed(void *arg, const struct err *e, struct buf *json)
{
    struct remote_cli *c = arg;
    if (e) {
        fprintf(stderr, "snapsync: %s\n", e->msg);
        c->rc = 1;
    } else {
        fwrite(json->data, 1, json->len, stdout);
        putchar('\n');
    }
    c->done = true;
}

static void cli_fetched(void *arg, const struct err *e, const struct remote_fetched *f)
{
    struct remote_cli *c = arg;
    if (e) {
        fprintf(stderr, "snapsync: %s\n", e->msg);
        c->rc = 1;
    } else {
        printf("{\"valid\":true,\"space\":\"%s\",\"instance_id\":\"%s\",\"entity_total\":%llu,\"size_bytes\":%llu,"
               "\"sha256\":\"%s\"}\n",
               f->sum.space, f->sum.instance_id, (unsigned long long)f->sum.entity_total,
               (unsigned long long)f->sum.size_bytes, f->sum.sha256);
    }
    c->done = true;
}

static int cmd_remote(int argc, char **argv)
{
    static struct config cfg;
    static struct server srv;
    static struct rtarget remote;
    const char *sub = argc ? argv[0] : "", *key = NULL, *out = NULL, *space = "", *inst = "";
    char *rest[128];
    int nrest = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "-o") && v) out = argv[++i];
        else if (!strcmp(argv[i], "--space") && v) space = argv[++i];
        else if (!strcmp(argv[i], "--instance") && v) inst = argv[++i];
        else if (argv[i][0] != '-' && !key && !strcmp(sub, "fetch")) key = argv[i];
        else if (nrest < 128) rest[nrest++] = argv[i];
    }
    bool list = !strcmp(sub, "list"), fetch = !strcmp(sub, "fetch");
    if ((!list && !fetch) || (fetch && (!key || !out))) {
        fprintf(stderr, "usage: snapsync remote list [--space S] [--instance I] [serve's --remote options]\n"
                        "       snapsync remote fetch KEY -o FILE [serve's --remote options]\n");
        return 2;
    }
    char err[512];
    cfg_defaults(&cfg);
    int rc = cfg_parse_serve(&cfg, nrest, rest);
    if (rc != 0) return rc == 1 ? 0 : 2;
    log_set_level(LOG_WARN);
    if ((rc = remote_config(&cfg, &remote, err, sizeof err)) <= 0) {
        fprintf(stderr, "snapsync: %s\n", rc < 0 ? err : "no remote: give --remote (or SNAPSYNC_REMOTE)");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    srv.loop = &loop;
    srv.cfg = &cfg;
    job_pool_init(&srv.jobs, &loop, NULL);
    if (peer_init(&srv) < 0) return 1;
    remote_init(&srv, &remote);
    struct remote_cli c = {0};
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.part", out ? out : "");
    if (list) {
        struct remote_list_req q = {.space = space, .instance = inst};
        if (remote_list(&srv, &q, cli_listed, &c) < 0) c.rc = 1, c.done = true;
    } else if (remote_fetch(&srv, key, tmp, out, cli_fetched, &c) < 0) {
        fprintf(stderr, "snapsync: '%s' is not a key of this remote\n", key);
        c.rc = 2;
        c.done = true;
    }
    while (!c.done && uv_run(&loop, UV_RUN_ONCE)) {}
    remote_free(&srv);
    peer_free(&srv);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_walk(&loop, walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return c.rc;
}

int main(int argc, char **argv)
{
    /* no global allocation statistics: they take a mutex on every malloc */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    /* glibc gives each thread that allocates its own 64 MiB arena; with the
     * loop, the writer, the pool and the compressors that is most of the
     * RSS for little gain. Two arenas keep contention low and memory flat. */
    mallopt(M_ARENA_MAX, 2);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("snapsync %s\n", SNAPSYNC_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "keys")) return cmd_keys(argc - 2, argv + 2);
    if (!strcmp(cmd, "remote")) return cmd_remote(argc - 2, argv + 2);
    if (!strcmp(cmd, "verify")) {
        if (argc != 3) {
            fprintf(stderr, "usage: snapsync verify FILE.ndjson.gz\n");
            return 2;
        }
        struct snap_summary sum;
        char err[512];
        if (snap_verify_file(argv[2], &sum, err, sizeof err) < 0) {
            fprintf(stderr, "snapsync: %s: INVALID: %s\n", argv[2], err);
            return 1;
        }
        printf("{\"file\":");
        struct buf b;
        buf_init(&b);
        json_cstr(&b, argv[2]);
        printf("%s,\"valid\":true,\"space\":\"%s\",\"space_uid\":\"%s\",\"instance_id\":\"%s\",\"server_version\":%llu,"
               "\"entity_total\":%llu,\"raw_bytes\":%llu,\"size_bytes\":%llu,\"sha256\":\"%s\"}\n",
               b.data, sum.space, sum.space_uid, sum.instance_id, (unsigned long long)sum.server_version,
               (unsigned long long)sum.entity_total, (unsigned long long)sum.raw_bytes,
               (unsigned long long)sum.size_bytes, sum.sha256);
        buf_free(&b);
        free(sum.counts_json);
        free(sum.blobs_json);
        return 0;
    }
    fprintf(stderr, "snapsync: unknown command '%s' (see snapsync --help)\n", cmd);
    return 2;
}
