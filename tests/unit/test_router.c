/* Unit tests: router.c */
#include <llhttp.h>

#include "test.h"
#include "net/router.h"
#include "core/util.h"

static void h(struct http_req *r) { (void)r; }

static struct router rt;

static enum route_result match(int method, const char *path, struct route_match *m)
{
    return router_match(&rt, method, path, strlen(path), m);
}

int main(void)
{
    router_init(&rt);
    struct route routes[] = {
        {.method = HTTP_GET, .pattern = "/healthz", .handler = h, .access = ACCESS_PUBLIC, .name = "healthz"},
        {.method = HTTP_PUT, .pattern = "/api/v1/spaces/{space}", .handler = h, .access = ACCESS_ADMIN, .name = "space_put"},
        {.method = HTTP_GET, .pattern = "/api/v1/spaces/{space}", .handler = h, .access = ACCESS_READ, .name = "space_get"},
        {.method = HTTP_DELETE, .pattern = "/api/v1/spaces/{space}", .handler = h, .access = ACCESS_ADMIN, .name = "space_delete"},
        {.method = HTTP_PUT, .pattern = "/api/v1/spaces/{space}/collections/{collection}/entities/{entity}", .handler = h, .access = ACCESS_WRITE, .name = "entity_put"},
        {.method = HTTP_POST, .pattern = "/api/v1/spaces/{space}/snapshots/import", .handler = h, .access = ACCESS_OPERATE, .name = "snapshot_import"},
        {.method = HTTP_GET, .pattern = "/api/v1/spaces/{space}/snapshots/{id}", .handler = h, .access = ACCESS_READ, .name = "snapshot_get"},
        {.method = HTTP_GET, .pattern = "/api/v1/spaces/{space}/blobs/{sha256}", .handler = h, .access = ACCESS_READ, .name = "blob_get"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(routes); i++) router_add(&rt, &routes[i]);

    struct route_match m;
    CHECK_INT(match(HTTP_GET, "/healthz", &m), ROUTE_OK);
    CHECK_STR(m.route->name, "healthz");
    CHECK_INT(match(HTTP_HEAD, "/healthz", &m), ROUTE_OK);           /* HEAD served by GET */
    CHECK_INT(match(HTTP_GET, "/healthz/", &m), ROUTE_NOT_FOUND);    /* no trailing slash magic */
    CHECK_INT(match(HTTP_GET, "/nope", &m), ROUTE_NOT_FOUND);
    CHECK_INT(match(HTTP_GET, "", &m), ROUTE_NOT_FOUND);
    CHECK_INT(match(HTTP_DELETE, "/healthz", &m), ROUTE_BAD_METHOD);
    CHECK_STR(m.allow, "GET, HEAD");

    CHECK_INT(match(HTTP_POST, "/api/v1/spaces/alpha", &m), ROUTE_BAD_METHOD);
    CHECK_STR(m.allow, "PUT, GET, HEAD, DELETE");
    CHECK_INT(match(HTTP_GET, "/api/v1/spaces/alpha", &m), ROUTE_OK);
    CHECK_STR(m.params.space, "alpha");
    CHECK_INT(match(HTTP_GET, "/api/v1/spaces/Alpha", &m), ROUTE_BAD_NAME);
    CHECK_STR(m.bad_param, "space");
    CHECK_INT(match(HTTP_GET, "/api/v1/spaces/..%2F..%2Fetc", &m), ROUTE_BAD_NAME);
    CHECK_INT(match(HTTP_GET, "/api/v1/spaces/%2e%2e", &m), ROUTE_BAD_NAME);
    CHECK_INT(match(HTTP_GET, "/api/v1/spaces//", &m), ROUTE_NOT_FOUND);

    CHECK_INT(match(HTTP_PUT, "/api/v1/spaces/a/collections/issues/entities/ISS%2D1", &m), ROUTE_OK);
    CHECK_STR(m.params.entity, "ISS-1");
    CHECK_STR(m.params.collection, "issues");
    CHECK_INT(match(HTTP_PUT, "/api/v1/spaces/a/collections/Issues/entities/x", &m), ROUTE_BAD_NAME);
    CHECK_STR(m.bad_param, "collection");
    CHECK_INT(match(HTTP_PUT, "/api/v1/spaces/a/collections/issues/entities/..", &m), ROUTE_BAD_NAME);
    CHECK_STR(m.bad_param, "entity id");

    /* literal before parameter; server-made ids: malformed -> 404 */
    CHECK_INT(match(HTTP_POST, "/api/v1/spaces/a/snapshots/import", &m), ROUTE_OK);
    CHECK_STR(m.route->name, "snapshot_import");
    CHECK_INT(match(HTTP_GET, "/api/v1/spaces/a/snapshots/01JD0000000000000000000000", &m), ROUTE_OK);
    CHECK_STR(m.params.id, "01JD0000000000000000000000");
    CHECK_INT(match(HTTP_GET, "/api/v1/spaces/a/snapshots/import", &m), ROUTE_BAD_ID);
    CHECK_INT(match(HTTP_GET, "/api/v1/spaces/a/blobs/xyz", &m), ROUTE_BAD_NAME);

    /* too many segments */
    CHECK_INT(match(HTTP_GET, "/a/b/c/d/e/f/g/h/i/j/k/l/m/n", &m), ROUTE_NOT_FOUND);
    router_free(&rt);
    TEST_MAIN_END();
}
