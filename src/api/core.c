/* core.c - health and status (docs/api.md, Health, status, metrics). Both answer from memory on the
 * loop thread (no SQL, no threadpool hop): they are what load balancers
 * and dashboards poll. */
#include <stdio.h>

#include "api/api.h"
#include "svc/auth.h"
#include "net/http.h"
#include "core/json.h"
#include "store/spaces.h"
#include "store/store.h"
#include "config.h"

void api_healthz(struct http_req *r)
{
    static const char body[] = "{\"status\":\"ok\"}";
    http_send(r, 200, NULL, body, sizeof body - 1, HTTP_BODY_STATIC);
}

/* "spaces" counts what the caller may see: a key limited to some spaces
 * must not learn how many others exist (docs/api.md). */
void api_status(struct http_req *r)
{
    struct server *srv = r->srv;
    size_t n, visible = 0;
    struct space **v = spaces_sorted(srv->spaces, &n);
    for (size_t i = 0; i < n; i++) visible += !auth_key(r) || key_has_space(auth_key(r), v[i]->st.name);
    struct buf b;
    buf_init(&b);
    buf_reserve(&b, 160);
    buf_puts(&b, "{\"name\":\"snapsync\"");
    json_kv_str(&b, "version", SNAPSYNC_VERSION);
    json_kv_str(&b, "instance_id", store_instance_id(srv->store));
    json_kv_u64(&b, "uptime_s", (now_ms_wall() - srv->started_ms) / 1000);
    json_kv_u64(&b, "spaces", visible);
    buf_putc(&b, '}');
    http_send_json(r, 200, &b);
}

void api_not_implemented(struct http_req *r)
{
    http_send_error(r, 501, "not_implemented", NULL, "%s is not implemented in this version",
                    r->route ? r->route->name : "this route");
}
