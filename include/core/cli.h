/* cli.h - command line and environment -> struct config.
 *
 * Every `serve` option has an environment variable (SNAPSYNC_ + upper-case
 * name with '-' -> '_'); a flag wins over the variable. A bad value is one
 * clear line on stderr and exit code 2.
 */
#ifndef SNAPSYNC_CLI_H
#define SNAPSYNC_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

enum durability { DURABILITY_FULL, DURABILITY_NORMAL };

#define CFG_MAX_ORIGINS 32
#define CFG_MAX_PROXIES 32

struct config {
    char listen_host[256];
    int listen_port;
    char data_dir[1024];
    uint64_t max_header_bytes;
    uint64_t max_body_bytes;
    uint64_t max_blob_bytes;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t body_timeout_ms;      /* longest wait for request-body bytes */
    uint64_t min_body_rate;        /* bytes/s a request body must average past body_timeout_ms; 0 = off */
    uint64_t max_connections;
    uint64_t shutdown_timeout_ms;
    uint64_t sse_keepalive_ms;
    uint64_t sse_queue_bytes;
    uint64_t sse_max_clients;
    uint64_t sse_replay_events;
    uint64_t snapshot_level;
    uint64_t pre_restore_level;      /* the level of pre_restore snapshots */
    uint64_t snapshot_every;
    uint64_t snapshot_keep_scheduled;
    uint64_t snapshot_keep_pre_restore;
    uint64_t snapshot_rate;
    uint64_t snapshot_threads;     /* compressor threads per snapshot */
    uint64_t snapshot_verify_every;  /* seconds between full checks of each snapshot file (0 = off) */
    uint64_t workers;              /* threadpool size */
    char cors_origins_raw[2048];
    char *cors_origins[CFG_MAX_ORIGINS];
    int n_cors_origins;
    bool cors_any;
    struct cidr trusted_proxies[CFG_MAX_PROXIES];   /* whose X-Forwarded-For is believed */
    int n_trusted_proxies;
    bool metrics_open;
    bool access_log;
    enum durability durability;
    int log_level;                 /* enum log_level */
    /* off-site snapshots (svc/remote.h); remote[0] == 0: off */
    char remote[1024];
    char remote_endpoint[512];
    char remote_region[64];
    char remote_credentials_file[1024];
    char remote_kinds[128];
    uint64_t remote_keep_scheduled, remote_keep_pre_restore;
    char remote_encrypt_to[2048];
    char remote_identity[1024];
    uint64_t remote_part_size;
    uint64_t remote_timeout_ms;
    uint64_t remote_retry_ms;
    uint64_t remote_attempts;
};

/* Fills cfg with the embedded defaults. */
void cfg_defaults(struct config *cfg);

/* Parses `serve` options (argv[0] is the first option) over the environment.
 * Returns 0, 1 when --help was printed (exit 0), or 2 after printing the
 * error line (exit 2). */
int cfg_parse_serve(struct config *cfg, int argc, char **argv);

/* Prints the serve options with defaults and environment names. */
void cfg_print_help(const char *prog);

/* True when origin (len bytes) may make cross-origin requests. */
bool cfg_origin_allowed(const struct config *cfg, const char *origin, size_t len);

#endif
