/* api.h - request handlers, one file per SPEC section. Loop thread. */
#ifndef SNAPSYNC_API_H
#define SNAPSYNC_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_req;

void api_healthz(struct http_req *r);
void api_status(struct http_req *r);
/* api_entities.c */
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
/* api_changes.c */
struct read_job;
typedef struct sqlite3 sqlite3;
void *changes_filter_copy(const void *filter);
/* read_fn: SSE frames of the changes after rj->since; sets rj->since to how
 * far it got and rj->flag when there is more. */
void changes_sse_work(sqlite3 *db, struct read_job *rj);
typedef void (*read_done_fn)(struct read_job *rj, struct http_req *r);
struct server;
void changes_page(struct server *srv, int64_t space_id, uint64_t since, uint64_t until, uint64_t limit,
                  const char *exclude_origin,
                  read_done_fn done, void *user);
/* Answers a normal /changes page (takes filter). */
void changes_respond(struct http_req *r, int64_t space_id, uint64_t since, uint64_t until, uint64_t limit, bool bodies,
                     void *filter);
/* Loop: the newest version of a space that change reads may show: what the
 * loop has been told is committed (and, with --durability full, fsynced).
 * A reader connection can see a commit before its fsync; a change feed, a
 * sync peer or a live feed that saw such a version could lose it to a power
 * cut after passing it on (a peer's checkpoint would then skip the versions
 * the source hands out again). UINT64_MAX for an unknown space. */
uint64_t changes_until(struct server *srv, const char *space);
/* GET /changes's query: since, limit (the list rule, api_util.h), bodies,
 * collections, exclude_origin, style, timeout_ms, feed. Returns 0, or -1
 * with the error code (invalid_parameter, invalid_name) and why for the
 * 400. Pure: any thread (fuzz_lists). */
#define CHANGES_MAX_COLLECTIONS 16
enum { CHANGES_FEED_NORMAL, CHANGES_FEED_LONGPOLL, CHANGES_FEED_SSE };
struct changes_query {
    uint64_t since, limit, timeout_ms;
    bool bodies, all_revs;
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
/* replicate.c */
void api_replicate(struct http_req *r);
/* api_keys.c */
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
