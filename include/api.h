/* api.h - request handlers, one file per SPEC section. Loop thread. */
#ifndef SNAPSYNC_API_H
#define SNAPSYNC_API_H

struct http_req;

void api_healthz(struct http_req *r);
void api_status(struct http_req *r);
/* Routes of the contract whose subsystem has not landed yet: 501. */
void api_not_implemented(struct http_req *r);

struct router;
/* Test-only routes (SNAPSYNC_TEST_HOOKS=1), see api_test.c. */
void api_test_routes(struct router *rt);

#endif
