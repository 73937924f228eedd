/* http_parse.h - the request-reading side of http.c, for http.c and
 * server.c: the RFC 9112 checks llhttp leaves to its user (obs-fold, header
 * name tokens, version, target form, Host, Transfer-Encoding) and the
 * steps that read a parsed request at the end of its headers. A failed
 * check sets the request's early answer (http_early, http.h) and the
 * caller answers and closes.
 *
 * Pure functions of a request and its connection's input: no I/O, no
 * callbacks into http.c or server.c. Loop thread.
 */
#ifndef SNAPSYNC_HTTP_PARSE_H
#define SNAPSYNC_HTTP_PARSE_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>

struct conn;
struct http_req;

/* Feeds one piece of input to c's parser: llhttp_execute plus the RFC 9112
 * checks that need the raw bytes (obs-fold). Returns llhttp's result, or
 * HPE_USER with c->req->early_status set when a check failed. */
llhttp_errno_t http_parse(struct conn *c, const char *data, size_t len);
/* obs-fold: checks the raw input up to the end of the span [at, at+len)
 * a header callback was handed. Returns 0, or HPE_USER with the early
 * answer set. */
int http_fold_scan(struct conn *c, struct http_req *r, const char *at, size_t len);
/* RFC 9110 tchar (a header name's characters). */
bool http_is_tchar(unsigned char c);
/* At the end of the headers: the version, target form, Host and
 * Transfer-Encoding checks. Returns false with the early answer set. */
bool http_request_valid(struct http_req *r, llhttp_t *p);
/* Sets r->path and r->query from the request target (origin or absolute
 * form; an empty path is "/"). */
void http_split_target(struct http_req *r);
/* Sets r->client and r->client_ip: the TCP peer, or the address a trusted
 * proxy (--trusted-proxies) named in X-Forwarded-For. */
void http_client_addr(struct http_req *r);

#endif
