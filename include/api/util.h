/* util.h - what the handlers share: reading on the threadpool with a
 * pooled read connection, submitting write ops, list paging, and small
 * request helpers. Loop thread unless noted. */
#ifndef SNAPSYNC_API_UTIL_H
#define SNAPSYNC_API_UTIL_H

#include <sqlite3.h>

#include "core/entity.h"
#include "net/http.h"
#include "store/read.h"
#include "store/spaces.h"
#include "store/writer.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000

/* Installs the default answer of read jobs (read_attach). At start. */
void api_read_attach(struct server *srv);
/* read_start for the request's store. */
void read_submit(struct http_req *r, struct read_job *rj, read_fn fn, read_done_fn done);

/* Paging, the one rule of every list (docs/api.md, Conventions):
 * ?limit= is a whole number from 1 to 1000 (decimal digits, percent-
 * encoded or not), 100 when absent; ?cursor= is the id of the last item
 * of the previous page, so one that cannot be an id of the list's kind is
 * refused rather than taken as a position. Anything else -- a bad escape,
 * an escaped NUL, a sign, an empty value, a cursor of the wrong kind --
 * is 400 invalid_parameter. Lists that do not page by cursor (/changes
 * pages by ?since=) use LIST_NO_CURSOR: their limit follows the rule and
 * cursor is not read. */
enum list_cursor {
    LIST_NO_CURSOR,
    LIST_CURSOR_SPACE,               /* a space name */
    LIST_CURSOR_COLLECTION,          /* a collection name */
    LIST_CURSOR_ENTITY,              /* an entity id */
    LIST_CURSOR_PEER,                /* a peer name */
    LIST_CURSOR_ULID,                /* keys, snapshots, sync jobs, conflicts */
    LIST_CURSOR_NUMBER,              /* audit entries: 1 to 2^63-1 */
};

struct list_page {
    uint64_t limit;
    char cursor[130];                /* decoded; "" when there is none */
    uint64_t cursor_num;             /* LIST_CURSOR_NUMBER: its value (0: none) */
};

/* Parses limit and cursor from a raw query (NULL: none) into p. Returns 0,
 * or -1 with why (a sentence for the 400 message) filled. Pure: any
 * thread (fuzz_lists). */
int api_list_parse(const char *query, size_t qlen, enum list_cursor kind, struct list_page *p, char *why,
                   size_t whycap);
/* The same for a request: answers 400 invalid_parameter and returns -1 on
 * a bad value. */
int api_paging(struct http_req *r, enum list_cursor kind, struct list_page *p);
/* A query parameter of a request (http_query), answering 400
 * invalid_parameter when it is malformed: returns its length, -1 if it is
 * absent, or -2 after answering. */
long api_query(struct http_req *r, const char *name, char *out, size_t cap);
/* The space of the route, or NULL after answering 404 space_not_found. */
struct space *api_space(struct http_req *r);
/* Parses a request body with defined members as a JSON object, or answers
 * 400 and returns NULL: a member that allowed (a NULL-terminated list, the
 * route's declaration of what it takes) does not list is 400
 * unknown_member, naming it (json.h); a string anywhere in it that holds a
 * NUL is 400 invalid_string (below). The one way a handler reads a JSON
 * body (entity bodies and pushes go through the canonicalizer). */
json_t *api_body_members(struct http_req *r, const char *const *allowed);
/* The same for a body whose members listed in data (NULL-terminated) are
 * entity bodies: user data, nested up to JSON_MAX_DEPTH in themselves.
 * Everything else in the body is a name or an option, and a string there
 * that holds a NUL (\u0000) is 400 invalid_string with a "member" detail:
 * no handler ever reads a name cut short at it. */
json_t *api_body_members_data(struct http_req *r, const char *const *allowed, const char *const *data);
/* Answers status with a parse error (and its "member" detail). */
void api_send_json_err(struct http_req *r, int status, const struct json_err *e);
/* The caller, for audit rows: key id, or "anonymous". */
const char *api_actor(const struct http_req *r);
/* Submits a write op; answers 503 overloaded and returns -1 when the queue
 * is full (op not queued: the caller frees it). */
int api_write(struct http_req *r, struct wop *op, wop_apply_fn apply, wop_done_fn done);
/* Sends a failed op's error. */
void api_send_wop_error(struct http_req *r, const struct wop *op);
/* Does an If-Match / If-None-Match value match rev (NULL: nothing there)?
 * Lists, "*" (any current representation) and W/ tags (only if weak_ok). */
int etag_list_match(const char *v, size_t l, const char *rev, bool weak_ok);
/* Reads "If-Match: \"rev\"" or If-None-Match into out (quotes and W/ off). */
bool api_etag_header(struct http_req *r, const char *name, char *out, size_t cap);

#endif
