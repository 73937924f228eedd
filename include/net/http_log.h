/* http_log.h - the access log of http.c: one line per finished request
 * (its target redacted, see http_redact_target in http.h), after the done
 * hook (struct http_hooks) has seen the request. Loop thread.
 */
#ifndef SNAPSYNC_HTTP_LOG_H
#define SNAPSYNC_HTTP_LOG_H

struct http_req;

/* Calls srv->hooks->done, then logs the `access` line when --access-log
 * is on. Once per request, when its response is queued or its stream has
 * ended. */
void http_access_log(struct http_req *r);

#endif
