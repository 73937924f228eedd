/* api.h - request handlers, one file per SPEC section. Loop thread. */
#ifndef SNAPSYNC_API_H
#define SNAPSYNC_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svc/changes.h"

struct http_req;

void api_healthz(struct http_req *r);
void api_status(struct http_req *r);
/* entities.c */
void api_spaces_list(struct http_req *r);
void api_space_get(struct http_req *r);
void api_space_put(struct http_req *r);
void api_space_delete(struct http_req *r);
void api_sync_status(struct http_req *r);
void api_entity_get(struct http_req *r);
void api_entity_list(struct http_req *r);
void api_entity_put(struct http_req *r);
void api_entity_delete(struct http_req *r);
void api_collections(struct http_req *r);
/* changes.c (the change reader itself is svc/changes.h) */
/* GET /changes's query: since, limit (the list rule, api/util.h), bodies,
 * collections, exclude_origin, style, timeout_ms, feed. Returns 0, or -1
 * with the error code (invalid_parameter, invalid_name) and why for the
 * 400. Pure: any thread (fuzz_lists). */
enum { CHANGES_FEED_NORMAL, CHANGES_FEED_LONGPOLL, CHANGES_FEED_SSE };
struct changes_query {
    uint64_t since, limit, timeout_ms;
    bool bodies, all_revs;
    bool deleted_only;               /* deleted=only: tombstones (a snapshot bootstrap's) */
    int feed;
    int ncoll;
    char coll[CHANGES_MAX_COLLECTIONS][64];
    char exclude_origin[27];
};
int changes_query_parse(const char *query, size_t qlen, struct changes_query *cq, const char **code, char *why,
                        size_t whycap);
void api_changes_get(struct http_req *r);
void api_changes_post(struct http_req *r);
void api_conflicts(struct http_req *r);
void api_conflict_resolve(struct http_req *r);
/* feeds.c: the event streams' handlers (the hub is svc/sse.h) */
void api_events(struct http_req *r);          /* GET /api/v1/events */
/* GET /changes?feed=sse (called by api_changes_get; takes filter). */
void feed_sse(struct http_req *r, int64_t space_id, uint64_t since, void *filter);
/* replicate.c */
/* keys.c */
void api_keys_create(struct http_req *r);
void api_keys_list(struct http_req *r);
void api_keys_revoke(struct http_req *r);
void api_audit(struct http_req *r);
/* Routes of the contract whose subsystem has not landed yet: 501. */
void api_not_implemented(struct http_req *r);

struct router;
/* Fills rt with every route of the server (routes.c's table, plus the test
 * routes with SNAPSYNC_TEST_HOOKS=1). main.c calls it before server_start:
 * the network layer routes with the table it is given, never builds it. */
void api_routes_init(struct router *rt);
/* Test-only routes (SNAPSYNC_TEST_HOOKS=1), see api_test.c. */
void api_test_routes(struct router *rt);

#endif
