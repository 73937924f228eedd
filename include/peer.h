/* peer.h - outgoing HTTP(S) to other snapsync instances: libcurl's multi
 * interface driven by the libuv loop (a uv_poll_t per socket curl asks to
 * watch, one uv_timer_t for curl's timeouts). Nothing blocks the loop: name
 * resolution uses curl's threaded resolver, transfers are non-blocking.
 * Loop thread only.
 *
 * A response body is kept in memory up to PEER_MAX_BODY (requests ask for
 * pages of at most 1,000 entities); past it the request fails.
 */
#ifndef SNAPSYNC_PEER_H
#define SNAPSYNC_PEER_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define PEER_MAX_BODY (64u << 20)

struct server;

struct peer_result {
    int status;                      /* HTTP status, or 0 when no response came */
    const char *error;               /* transport error (timeout, refused...), or NULL */
    bool timed_out;                  /* no complete answer within the timeout */
    struct buf *body;
};

typedef void (*peer_cb)(void *arg, const struct peer_result *res);

int peer_init(struct server *srv);
void peer_free(struct server *srv);
/* Sends method url with the bearer token and body (copied; NULL for none).
 * cb runs on the loop thread exactly once. Returns 0 or -1 (not sent, cb
 * not called). */
int peer_request(struct server *srv, const char *method, const char *url, const char *token, const char *body,
                 size_t len, long timeout_ms, peer_cb cb, void *arg);

/* Ends every transfer in flight; each callback runs with an error. */
void peer_abort_all(struct server *srv);

#endif
