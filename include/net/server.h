/* server.h - the listener, connections, timeouts and shutdown.
 *
 * Threads: everything here runs on the loop thread. A connection is a
 * uv_tcp_t and an llhttp parser; it holds no read buffer while idle (reads go
 * through one shared 64 KiB buffer and are parsed at once), so an idle
 * keep-alive connection costs a few hundred bytes. Requests on a connection
 * are handled one at a time, in order: the parser pauses at the end of each
 * message and resumes once its response is queued, so pipelined responses
 * can never overtake each other. Input that arrives meanwhile is kept (up to
 * a cap, then reading pauses).
 *
 * Timeouts live in ordered lists (every entry of a list has the same
 * timeout, so appending keeps them sorted) swept by one timer: O(1) per
 * request and no timer handle per connection.
 */
#ifndef SNAPSYNC_SERVER_H
#define SNAPSYNC_SERVER_H

#include <llhttp.h>
#include <stdatomic.h>
#include <uv.h>

#include "core/cli.h"
#include "core/jobs.h"
#include "net/router.h"
#include "core/util.h"

struct http_req;
struct http_hooks;
struct store;
struct writer;
struct spaces;
struct auth;
struct sse_hub;
struct peer_ctx;
struct sync_ctx;
struct metrics;
struct blob_store;

enum conn_state {
    CONN_IDLE,          /* waiting for the first byte of a request */
    CONN_HEADERS,       /* reading a request line and headers */
    CONN_BODY,          /* reading a body */
    CONN_HANDLING,      /* a handler owns the request (parser paused) */
    CONN_STREAMING,     /* a streaming response (download, SSE) is open */
    CONN_LINGER,        /* response sent, write side shut, draining input */
    CONN_CLOSING,       /* uv_close called; freed in its callback */
};

enum timeout_kind { TO_NONE, TO_HEADER, TO_IDLE, TO_BODY, TO_LINGER, TO_COUNT };

struct tlist {
    struct list head;
    uint64_t timeout_ms;
};

struct conn {
    uv_tcp_t tcp;                /* first: handle->data unused, container_of */
    llhttp_t parser;
    struct server *srv;
    struct list link;            /* srv->conns */
    struct list tlink;           /* a timeout list, or unlinked */
    uint64_t deadline;
    struct http_req *req;        /* request being parsed or handled */
    char *pending;               /* input received while a request is handled */
    uint32_t pending_len, pending_off;
    uint32_t nrequests;
    const char *feed_lo;         /* the input piece llhttp is parsing (http_parse) */
    uint32_t feed_gen;           /* counts those pieces */
    uint8_t state;               /* enum conn_state */
    uint8_t tkind;               /* enum timeout_kind */
    unsigned reading : 1;        /* uv_read_start active */
    unsigned eof : 1;            /* the client shut its write side */
    unsigned close_after : 1;    /* close once the current response is sent */
    unsigned in_process : 1;     /* conn_process on the stack (no re-entry) */
    unsigned wait_drain : 1;     /* too much queued output: parse later */
    char peer[56];               /* "ip:port" for logs and rate limits */
};

/* Counters read by /metrics and the benchmarks. Loop thread. */
struct server_stats {
    uint64_t accepted, rejected, requests, open_conns, bytes_out;
    uint64_t timeouts_header, timeouts_idle, timeouts_body, parse_errors;
    uint64_t loop_max_stall_ns;      /* the busiest loop iteration since start */
    uint64_t loop_stalls;            /* iterations busy for LOOP_STALL_NS or more */
};

#define LOOP_STALL_NS (100 * 1000 * 1000ull)

typedef void (*server_hook)(struct server *srv, void *arg);

struct server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct router router;           /* filled by main.c before server_start */
    const struct http_hooks *hooks; /* access and request-done hooks (http.h), set with the router */
    struct store *store;
    struct writer *writer;          /* the group-commit write path */
    struct spaces *spaces;          /* loop-side registry of spaces */
    struct auth *auth;              /* keys cache, limiters */
    struct sse_hub *sse;            /* SSE subscribers, replay ring, live feeds */
    struct peer_ctx *peer;          /* outgoing HTTP to peers (libcurl multi) */
    struct sync_ctx *sync;          /* sync jobs */
    struct metrics *metrics;        /* Prometheus counters */
    struct blob_store *blobs;       /* blob files pinned or being removed (blobs.c) */
    uv_tcp_t listener;
    uv_timer_t sweep;
    uint64_t sweep_due;
    uv_prepare_t stall_prep;        /* measures each loop iteration's busy time */
    uint64_t stall_t, stall_idle;   /* hrtime and poll idle time at the last prepare */
    uv_timer_t trim_timer;          /* malloc_trim after many connections closed */
    uint64_t closed_since_trim;
    uv_timer_t shutdown_timer;
    uv_signal_t sigterm, sigint;
    struct list conns;
    struct tlist tl[TO_COUNT];
    struct server_stats stats;
    char *read_buf;                 /* shared by every read, 64 KiB */
    uint32_t rid_prefix;            /* X-Request-Id: prefix + counter */
    uint64_t rid_counter;
    struct job_pool jobs;           /* the threadpool (core/jobs.h): in flight, stopping */
    bool shutting_down;
    unsigned loading;                /* startup reads still on the pool: listen at 0 */
    bool listener_open;
    char bound_addr[64];
    int bound_port;
    uint64_t started_ms;
    char date[40];                  /* cached "Date: ..." value */
    uint64_t date_sec;
    /* hooks run once when shutdown starts (SSE hub: send event: shutdown) */
    struct { server_hook fn; void *arg; } on_shutdown[8];
    int n_on_shutdown;
};

/* The server whose pool ran job j (every job of the process runs on
 * srv->jobs): for work() and done() functions that need the store. */
static inline struct server *job_server(const struct job *j) { return container_of(j->pool, struct server, jobs); }

/* Binds the listener, logs the `listening` line. Returns 0 or a UV error.
 * The caller has filled srv->router (main.c: the api route table) and
 * srv->hooks before: the server routes with the table it is given and asks
 * the hooks about access, never building or naming either. */
int server_start(struct server *srv, uv_loop_t *loop, const struct config *cfg);
/* What server_start does before it binds (no listener, no signals):
 * connection lists, timeout lists, the read buffer, the timers.
 * server_start calls it; a test that drives connections itself calls it
 * instead (tests/fuzz/fuzz_http.c), with srv->router and srv->hooks filled
 * the same way. */
void server_init(struct server *srv, uv_loop_t *loop, const struct config *cfg);
/* A connection on a stream socket the caller opened (one end of a
 * socketpair in tests/fuzz/fuzz_http.c), started exactly as an accepted one
 * is: from here on it reads, parses and answers through the same code.
 * Takes fd (closed with the connection). Returns the connection, or NULL
 * if libuv refused the socket (fd is then the caller's). Loop thread. */
struct conn *server_conn_open(struct server *srv, uv_os_sock_t fd);
/* Runs every pending timeout now, as if its deadline had passed (408 for
 * headers or a body, close for idle and lingering connections): how a
 * test lets time pass. Loop thread. */
void server_expire_timeouts(struct server *srv);
/* Starts a graceful shutdown (idempotent): stop accepting, let in-flight
 * requests finish, close idle connections, force-close at the timeout. */
void server_shutdown(struct server *srv);
void server_free(struct server *srv);
void server_add_shutdown_hook(struct server *srv, server_hook fn, void *arg);

/* For http.c: connection transitions. */
void conn_set_timeout(struct conn *c, enum timeout_kind kind);
void conn_close(struct conn *c);              /* immediate, idempotent */
void conn_read_resume(struct conn *c);        /* after a streamed body paused reading (http_body_resume) */
void conn_finish_request(struct conn *c);     /* the current request is done */
void conn_shutdown_linger(struct conn *c);    /* shut writes, drain, close */
const char *server_date(struct server *srv);  /* "Tue, 24 Nov 2026 13:24:33 GMT" */
void server_request_id(struct server *srv, char out[17]);

#endif
