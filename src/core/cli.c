/* cli.c - option table, parsing and validation for `snapsync serve`.
 * Runs on the main thread before the loop starts. */
#include "core/cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/util.h"

enum opt_type { OPT_STR, OPT_U64, OPT_SIZE, OPT_BOOL, OPT_LISTEN, OPT_PATH, OPT_ORIGINS, OPT_PROXIES, OPT_DURABILITY, OPT_LOGLEVEL };

struct opt {
    const char *name;          /* without the leading "--" */
    enum opt_type type;
    size_t off;                /* offset in struct config */
    uint64_t min, max;
    const char *def;           /* default, as text, for --help */
    const char *help;
};

#define OFF(f) offsetof(struct config, f)
static const struct opt opts[] = {
    {"listen", OPT_LISTEN, 0, 0, 0, "127.0.0.1:7420", "address and port to listen on (port 0 picks a free one)"},
    {"data", OPT_PATH, OFF(data_dir), 0, 0, "./snapsync-data", "data directory (database, snapshots, blobs, admin.key)"},
    {"max-header-bytes", OPT_SIZE, OFF(max_header_bytes), 1024, 1 << 20, "16384", "request line + headers limit (431 past it)"},
    {"max-body-bytes", OPT_SIZE, OFF(max_body_bytes), 1024, 1ull << 32, "8MiB", "JSON request body limit (413 past it)"},
    {"max-blob-bytes", OPT_SIZE, OFF(max_blob_bytes), 1024, 1ull << 42, "1GiB", "blob and snapshot-import upload limit"},
    {"header-timeout-ms", OPT_U64, OFF(header_timeout_ms), 10, 3600000, "10000", "time to receive a request's headers (408 past it)"},
    {"idle-timeout-ms", OPT_U64, OFF(idle_timeout_ms), 10, 86400000, "60000", "idle keep-alive connection lifetime; also the send inactivity timeout"},
    {"body-timeout-ms", OPT_U64, OFF(body_timeout_ms), 10, 3600000, "30000", "longest wait for the next request-body bytes (408 past it)"},
    {"min-body-rate", OPT_SIZE, OFF(min_body_rate), 0, 1ull << 30, "1024", "bytes/s a request body must average once --body-timeout-ms has passed (408 below it; 0 = off)"},
    {"max-connections", OPT_U64, OFF(max_connections), 1, 1000000, "10000", "open connections (503 and close past it)"},
    {"shutdown-timeout-ms", OPT_U64, OFF(shutdown_timeout_ms), 0, 3600000, "10000", "graceful shutdown budget on SIGTERM/SIGINT"},
    {"sse-keepalive-ms", OPT_U64, OFF(sse_keepalive_ms), 10, 3600000, "15000", "SSE ': ping' interval"},
    {"sse-queue-bytes", OPT_SIZE, OFF(sse_queue_bytes), 1024, 1ull << 30, "262144", "bytes held for an SSE subscriber (each queued event: its frame plus 64) before overflow"},
    {"sse-max-clients", OPT_U64, OFF(sse_max_clients), 0, 1000000, "10000", "SSE subscribers (503 past it)"},
    {"sse-replay-events", OPT_U64, OFF(sse_replay_events), 0, 10000000, "10000", "events kept for Last-Event-ID replay"},
    {"snapshot-level", OPT_U64, OFF(snapshot_level), 0, 9, "6", "gzip level of snapshot files"},
    {"pre-restore-level", OPT_U64, OFF(pre_restore_level), 0, 9, "1", "gzip level of the snapshot a restore takes first (it runs while an operator waits)"},
    {"snapshot-every", OPT_U64, OFF(snapshot_every), 0, 31536000, "0", "seconds between scheduled snapshots (0 = off)"},
    {"snapshot-keep-scheduled", OPT_U64, OFF(snapshot_keep_scheduled), 0, 100000, "5", "scheduled snapshots kept per space"},
    {"snapshot-keep-pre-restore", OPT_U64, OFF(snapshot_keep_pre_restore), 0, 100000, "5", "pre-restore snapshots kept per space"},
    {"snapshot-rate", OPT_U64, OFF(snapshot_rate), 0, 100000, "10", "snapshot creations per minute per key and space (0 = unlimited)"},
    {"snapshot-threads", OPT_U64, OFF(snapshot_threads), 1, 8, "2", "compressor threads per snapshot (parallel gzip)"},
    {"snapshot-verify-every", OPT_U64, OFF(snapshot_verify_every), 0, 31536000, "86400", "re-verify each completed snapshot file in the background this often, in seconds (0 = off)"},
    {"workers", OPT_U64, OFF(workers), 1, 128, "4", "threadpool threads for database, compression and file work"},
    {"cors-origins", OPT_ORIGINS, 0, 0, 0, "", "comma-separated origins allowed cross-origin, or *"},
    {"trusted-proxies", OPT_PROXIES, 0, 0, 0, "", "comma-separated addresses or networks (10.0.0.0/8) of reverse proxies whose X-Forwarded-For names the client"},
    {"metrics-open", OPT_BOOL, OFF(metrics_open), 0, 0, "false", "serve /metrics without an admin key"},
    {"access-log", OPT_BOOL, OFF(access_log), 0, 0, "true", "one JSON line per request on stderr"},
    {"durability", OPT_DURABILITY, 0, 0, 0, "full", "full: fsync at every commit; normal: fsync at checkpoints only"},
    {"log-level", OPT_LOGLEVEL, 0, 0, 0, "info", "debug, info, warn or error"},
    /* off-site snapshots (svc/remote.c checks these at start); OPT_STR's
     * max is the field's size */
    {"remote", OPT_STR, OFF(remote), 0, sizeof(((struct config *)0)->remote), "", "where snapshots are copied: s3://BUCKET/PREFIX or webdav+http(s)://[USER@]HOST[:PORT]/PATH (empty = off)"},
    {"remote-endpoint", OPT_STR, OFF(remote_endpoint), 0, sizeof(((struct config *)0)->remote_endpoint), "", "S3 endpoint URL (MinIO, other S3-compatible stores); default https://s3.REGION.amazonaws.com"},
    {"remote-region", OPT_STR, OFF(remote_region), 0, sizeof(((struct config *)0)->remote_region), "us-east-1", "S3 region the requests are signed for"},
    {"remote-credentials-file", OPT_STR, OFF(remote_credentials_file), 0, sizeof(((struct config *)0)->remote_credentials_file), "", "0600 file: S3 'ACCESS_KEY_ID:SECRET' (else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or the WebDAV password"},
    {"remote-kinds", OPT_STR, OFF(remote_kinds), 0, sizeof(((struct config *)0)->remote_kinds), "manual,scheduled,pre_restore", "comma-separated snapshot kinds uploaded"},
    {"remote-keep-scheduled", OPT_U64, OFF(remote_keep_scheduled), 0, 100000, "30", "scheduled snapshots kept on the remote per space"},
    {"remote-keep-pre-restore", OPT_U64, OFF(remote_keep_pre_restore), 0, 100000, "10", "pre-restore snapshots kept on the remote per space"},
    {"remote-encrypt-to", OPT_STR, OFF(remote_encrypt_to), 0, sizeof(((struct config *)0)->remote_encrypt_to), "", "comma-separated age X25519 recipients (age1...): uploads are encrypted to them"},
    {"remote-identity", OPT_STR, OFF(remote_identity), 0, sizeof(((struct config *)0)->remote_identity), "", "age identity file (AGE-SECRET-KEY-1...) to read encrypted remote snapshots"},
    {"remote-part-size", OPT_SIZE, OFF(remote_part_size), 5u << 20, 5ull << 30, "16MiB", "S3 objects above this go up in parts of this size (multipart upload)"},
    {"remote-timeout-ms", OPT_U64, OFF(remote_timeout_ms), 100, 3600000, "30000", "a remote transfer with no byte moving for this long fails (and is retried)"},
    {"remote-retry-ms", OPT_U64, OFF(remote_retry_ms), 10, 3600000, "2000", "first wait before retrying a failed upload; doubles each time, at most 10 minutes"},
    {"remote-attempts", OPT_U64, OFF(remote_attempts), 1, 1000, "8", "upload attempts before a snapshot's upload is marked failed"},
};

void cfg_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 7420;
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "./snapsync-data");
    cfg->max_header_bytes = 16384;
    cfg->max_body_bytes = 8u << 20;
    cfg->max_blob_bytes = 1u << 30;
    cfg->header_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->body_timeout_ms = 30000;
    cfg->min_body_rate = 1024;
    cfg->max_connections = 10000;
    cfg->shutdown_timeout_ms = 10000;
    cfg->sse_keepalive_ms = 15000;
    cfg->sse_queue_bytes = 262144;
    cfg->sse_max_clients = 10000;
    cfg->sse_replay_events = 10000;
    cfg->snapshot_level = 6;
    cfg->pre_restore_level = 1;
    cfg->snapshot_every = 0;
    cfg->snapshot_keep_scheduled = 5;
    cfg->snapshot_keep_pre_restore = 5;
    cfg->snapshot_rate = 10;
    cfg->snapshot_threads = 2;
    cfg->snapshot_verify_every = 86400;
    cfg->workers = 4;
    cfg->access_log = true;
    cfg->durability = DURABILITY_FULL;
    cfg->log_level = LOG_INFO;
    snprintf(cfg->remote_region, sizeof cfg->remote_region, "us-east-1");
    snprintf(cfg->remote_kinds, sizeof cfg->remote_kinds, "manual,scheduled,pre_restore");
    cfg->remote_keep_scheduled = 30;
    cfg->remote_keep_pre_restore = 10;
    cfg->remote_part_size = 16u << 20;
    cfg->remote_timeout_ms = 30000;
    cfg->remote_retry_ms = 2000;
    cfg->remote_attempts = 8;
}

static void env_name(const struct opt *o, char *out, size_t n)
{
    size_t j = (size_t)snprintf(out, n, "SNAPSYNC_");
    for (const char *p = o->name; *p && j + 1 < n; p++)
        out[j++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[j] = '\0';
}

/* src is NULL for a flag, else the environment variable's name */
static int bad(const struct opt *o, const char *src, const char *val, const char *why)
{
    if (src) fprintf(stderr, "snapsync: invalid value '%s' for %s: %s\n", val, src, why);
    else fprintf(stderr, "snapsync: invalid value '%s' for --%s: %s\n", val, o->name, why);
    return 2;
}

static int parse_listen(struct config *cfg, const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon) return -1;
    const char *host = v;
    size_t hlen = (size_t)(colon - v);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') { host++; hlen -= 2; }
    if (hlen == 0 || hlen >= sizeof cfg->listen_host) return -1;
    uint64_t port;
    if (parse_u64(colon + 1, strlen(colon + 1), 65535, &port) < 0) return -1;
    memcpy(cfg->listen_host, host, hlen);
    cfg->listen_host[hlen] = '\0';
    cfg->listen_port = (int)port;
    return 0;
}

static int parse_origins(struct config *cfg, const char *v)
{
    if (strlen(v) >= sizeof cfg->cors_origins_raw) return -1;
    snprintf(cfg->cors_origins_raw, sizeof cfg->cors_origins_raw, "%s", v);
    cfg->n_cors_origins = 0;
    cfg->cors_any = false;
    char *save = NULL;
    for (char *tok = strtok_r(cfg->cors_origins_raw, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (strcmp(tok, "*") == 0) { cfg->cors_any = true; continue; }
        if (strncmp(tok, "http://", 7) != 0 && strncmp(tok, "https://", 8) != 0) return -1;
        size_t l = strlen(tok);
        if (tok[l - 1] == '/') tok[l - 1] = '\0';    /* origins carry no path */
        if (cfg->n_cors_origins == CFG_MAX_ORIGINS) return -1;
        cfg->cors_origins[cfg->n_cors_origins++] = tok;
    }
    return 0;
}

static int parse_proxies(struct config *cfg, const char *v)
{
    cfg->n_trusted_proxies = 0;
    for (const char *s = v; *s;) {
        while (*s == ',' || *s == ' ') s++;
        if (!*s) break;
        size_t l = strcspn(s, ", ");
        if (cfg->n_trusted_proxies == CFG_MAX_PROXIES) return -1;
        if (!cidr_parse(s, l, &cfg->trusted_proxies[cfg->n_trusted_proxies++])) return -1;
        s += l;
    }
    return 0;
}

static int apply(struct config *cfg, const struct opt *o, const char *src, const char *v)
{
    uint64_t n;
    switch (o->type) {
    case OPT_STR:
        if (strlen(v) >= o->max) return bad(o, src, v, "too long");
        snprintf((char *)cfg + o->off, o->max, "%s", v);
        return 0;
    case OPT_U64:
        if (parse_u64(v, strlen(v), UINT64_MAX, &n) < 0) return bad(o, src, v, "expected a whole number");
        goto range;
    case OPT_SIZE:
        if (parse_size(v, &n) < 0) return bad(o, src, v, "expected a size such as 16384, 512KiB or 8MiB");
    range:
        if (n < o->min || n > o->max) {
            char why[96];
            snprintf(why, sizeof why, "must be between %llu and %llu",
                     (unsigned long long)o->min, (unsigned long long)o->max);
            return bad(o, src, v, why);
        }
        *(uint64_t *)((char *)cfg + o->off) = n;
        return 0;
    case OPT_BOOL: {
        bool *b = (bool *)((char *)cfg + o->off);
        if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcasecmp(v, "yes")) *b = true;
        else if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "off") || !strcasecmp(v, "no")) *b = false;
        else return bad(o, src, v, "expected true or false");
        return 0;
    }
    case OPT_LISTEN:
        if (parse_listen(cfg, v) < 0) return bad(o, src, v, "expected HOST:PORT, e.g. 127.0.0.1:7420 or [::1]:0");
        return 0;
    case OPT_PATH:
        if (!*v || strlen(v) >= sizeof cfg->data_dir) return bad(o, src, v, "expected a directory path");
        snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", v);
        return 0;
    case OPT_ORIGINS:
        if (parse_origins(cfg, v) < 0)
            return bad(o, src, v, "expected '*' or up to 32 comma-separated origins like https://app.example");
        return 0;
    case OPT_PROXIES:
        if (parse_proxies(cfg, v) < 0)
            return bad(o, src, v, "expected up to 32 comma-separated IP addresses or networks like 10.0.0.0/8");
        return 0;
    case OPT_DURABILITY:
        if (!strcmp(v, "full")) cfg->durability = DURABILITY_FULL;
        else if (!strcmp(v, "normal")) cfg->durability = DURABILITY_NORMAL;
        else return bad(o, src, v, "expected full or normal");
        return 0;
    case OPT_LOGLEVEL:
        if (!strcmp(v, "debug")) cfg->log_level = LOG_DEBUG;
        else if (!strcmp(v, "info")) cfg->log_level = LOG_INFO;
        else if (!strcmp(v, "warn")) cfg->log_level = LOG_WARN;
        else if (!strcmp(v, "error")) cfg->log_level = LOG_ERROR;
        else return bad(o, src, v, "expected debug, info, warn or error");
        return 0;
    }
    return 2;
}

void cfg_print_help(const char *prog)
{
    printf("usage: %s serve [options]\n\n"
           "Each option can also be set by its environment variable; a flag wins.\n\n", prog);
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        const struct opt *o = &opts[i];
        char env[64], flag[64];
        env_name(o, env, sizeof env);
        snprintf(flag, sizeof flag, "--%s%s", o->name, o->type == OPT_BOOL ? "[=BOOL]" : " VALUE");
        printf("  %-34s %s\n  %-34s [%s] %s\n", flag, o->help, "", *o->def ? o->def : "none", env);
    }
}

int cfg_parse_serve(struct config *cfg, int argc, char **argv)
{
    int rc;
    /* environment first, flags override */
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        char env[64];
        env_name(&opts[i], env, sizeof env);
        const char *v = getenv(env);
        if (v && (rc = apply(cfg, &opts[i], env, v)) != 0) return rc;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { cfg_print_help("snapsync"); return 1; }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "snapsync: unexpected argument '%s' (see snapsync serve --help)\n", a);
            return 2;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = NULL;
        for (size_t k = 0; k < ARRAY_SIZE(opts); k++)
            if (strlen(opts[k].name) == nlen && !strncmp(opts[k].name, name, nlen)) o = &opts[k];
        if (!o) {
            fprintf(stderr, "snapsync: unknown option '%.*s' (see snapsync serve --help)\n", (int)(nlen + 2), a);
            return 2;
        }
        const char *v;
        if (eq) v = eq + 1;
        else if (o->type == OPT_BOOL) {
            /* "--flag", or "--flag false" when a boolean word follows */
            const char *next = i + 1 < argc ? argv[i + 1] : NULL;
            static const char *const words[] = {"true", "false", "1", "0", "on", "off", "yes", "no"};
            v = "true";
            for (size_t k = 0; next && k < ARRAY_SIZE(words); k++)
                if (!strcasecmp(next, words[k])) { v = argv[++i]; break; }
        }
        else if (i + 1 < argc) v = argv[++i];
        else {
            fprintf(stderr, "snapsync: option --%s needs a value\n", o->name);
            return 2;
        }
        if ((rc = apply(cfg, o, NULL, v)) != 0) return rc;
    }
    return 0;
}

bool cfg_origin_allowed(const struct config *cfg, const char *origin, size_t len)
{
    if (cfg->cors_any) return true;
    for (int i = 0; i < cfg->n_cors_origins; i++)
        if (strlen(cfg->cors_origins[i]) == len && !strncasecmp(cfg->cors_origins[i], origin, len)) return true;
    return false;
}
