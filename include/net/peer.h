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

#include "core/util.h"

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

/* The longest peer base URL accepted (bytes). */
#define PEER_URL_MAX 500

/* Checks a peer's base URL as a client gave it (POST /sync "peer_url",
 * PUT /peers "url") and writes the form jobs use and checkpoints are keyed
 * by: http:// or https://, a host (name, IPv4 or [IPv6]) and an optional
 * port, then an optional path prefix (a proxy's); scheme and host in
 * lower case; no trailing '/' and no trailing "/api/v1" (routes are
 * appended to it, so "http://h:7420/api/v1/" and "http://h:7420" are the
 * same peer). Refused: other schemes, credentials, query or fragment,
 * spaces and control or non-ASCII bytes, a bad port, a route under
 * /api/v1 (a space's URL), more than PEER_URL_MAX bytes. Returns 0, or -1
 * with why filled with what is wrong (a clause for the client's error
 * message). Any thread. */
int peer_base_url(const char *in, char *out, size_t cap, char *why, size_t whycap);

/* A transfer built by another module of net/ (remote_http.c): easy is a
 * CURL * it configured and keeps owning (it cleans it up after done).
 * It joins the same multi, so it runs on the loop like the peer requests;
 * done(arg, CURLcode) runs once on the loop when it ends (also when
 * peer_abort_all ends it). Returns 0, or -1 (not added, done not called). */
typedef void (*peer_easy_done_fn)(void *arg, int curl_code);
int peer_easy_add(struct server *srv, void *easy, peer_easy_done_fn done, void *arg);
/* Takes easy out of the multi without calling its done. */
void peer_easy_remove(struct server *srv, void *easy);

/* Ends every transfer in flight; each callback runs with an error. */
void peer_abort_all(struct server *srv);

#endif
