/* main.c - commands, start-up and the shutdown order.
 *
 *   serve    parse options, prepare the data dir, open the database, run
 *            the loop until SIGTERM/SIGINT, then close in reverse order
 *   --version, --help
 *
 * Start-up runs on the main thread before the loop, so it may block (mkdir,
 * migrations); once uv_run starts, this thread is the loop thread.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "server.h"
#include "store.h"

static void usage(FILE *f)
{
    fprintf(f,
            "snapsync %s - snapshot and sync server\n\n"
            "usage:\n"
            "  snapsync serve [--listen 127.0.0.1:7420] [--data ./snapsync-data] [options]\n"
            "  snapsync serve --help        all serve options and their environment variables\n"
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

static void walk_close(uv_handle_t *h, void *arg)
{
    UNUSED(arg);
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int cmd_serve(int argc, char **argv)
{
    static struct config cfg;
    static struct server srv;
    char err[512];
    cfg_defaults(&cfg);
    int rc = cfg_parse_serve(&cfg, argc, argv);
    if (rc == 1) return 0;
    if (rc != 0) return 2;
    log_set_level((enum log_level)cfg.log_level);

    if (!getenv("UV_THREADPOOL_SIZE")) {
        char n[16];
        snprintf(n, sizeof n, "%llu", (unsigned long long)cfg.workers);
        setenv("UV_THREADPOOL_SIZE", n, 1);
    }
    signal(SIGPIPE, SIG_IGN);
    if (prepare_data_dir(cfg.data_dir) < 0) return 1;

    struct store *st = NULL;
    if (store_open(cfg.data_dir, cfg.durability, &st, err, sizeof err) < 0) {
        log_error("store_open_failed", "\"error\":\"%s\"", err);
        return 1;
    }
    log_info("store_open", "\"path\":\"%s\",\"schema_version\":%d,\"instance_id\":\"%s\",\"durability\":\"%s\"",
             store_db_path(st), store_schema_version(st), store_instance_id(st),
             cfg.durability == DURABILITY_FULL ? "full" : "normal");

    uv_loop_t loop;
    uv_loop_init(&loop);
    log_attach_loop(&loop);
    srv.store = st;
    if (server_start(&srv, &loop, &cfg) < 0) {
        server_shutdown(&srv);
        uv_run(&loop, UV_RUN_DEFAULT);
        rc = 1;
    } else {
        uv_run(&loop, UV_RUN_DEFAULT);
        rc = 0;
        log_info("stopped", "\"requests\":%llu", (unsigned long long)srv.stats.requests);
    }
    log_detach_loop();
    uv_run(&loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&loop) == UV_EBUSY) {
        uv_walk(&loop, walk_close, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    server_free(&srv);
    store_close(st);
    return rc;
}

int main(int argc, char **argv)
{
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
    fprintf(stderr, "snapsync: unknown command '%s' (see snapsync --help)\n", cmd);
    return 2;
}
