/* routes.c - every route of the server in one table: method, pattern,
 * handler, who may call it (enum route_access) and body handling. The auth
 * check and the metrics labels read this table; nothing else decides
 * access. Literal routes come before parameter routes of the same shape
 * (the first match wins). */
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/blobs.h"
#include "api/sync.h"
#include "net/http.h"
#include "net/router.h"
#include "net/server.h"
#include "svc/blobs.h"
#include "api/snapshots.h"
#include "api/metrics.h"
#include "svc/sse.h"
#include "svc/sync.h"
#include "api/ui.h"

#define S "/api/v1/spaces/{space}"
#define R(m, pat, fn, acc, fl, nm) \
    {.method = (m), .pattern = (pat), .handler = (fn), .access = (acc), .flags = (fl), .name = (nm)}

static const struct route table[] = {
    /* health, status, metrics */
    R(HTTP_GET, "/healthz", api_healthz, ACCESS_PUBLIC, ROUTE_NO_BODY, "healthz"),
    /* the dashboard (public; it asks for a token) */
    R(HTTP_GET, "/ui", api_ui_redirect, ACCESS_PUBLIC, ROUTE_NO_BODY, "ui"),
    R(HTTP_GET, "/ui/", api_ui, ACCESS_PUBLIC, ROUTE_NO_BODY, "ui"),
    R(HTTP_GET, "/ui/{asset}", api_ui, ACCESS_PUBLIC, ROUTE_NO_BODY, "ui"),
    /* the JavaScript client (public, like the dashboard's files) */
    R(HTTP_GET, "/sdk/snapsync.js", api_sdk, ACCESS_PUBLIC, ROUTE_NO_BODY, "sdk"),
    R(HTTP_GET, "/api/v1/status", api_status, ACCESS_READ, ROUTE_NO_BODY, "status"),
    R(HTTP_GET, "/metrics", api_metrics, ACCESS_METRICS, ROUTE_NO_BODY, "metrics"),
    /* keys, audit */
    R(HTTP_POST, "/api/v1/keys", api_keys_create, ACCESS_ADMIN, 0, "keys_create"),
    R(HTTP_GET, "/api/v1/keys", api_keys_list, ACCESS_ADMIN, ROUTE_NO_BODY, "keys_list"),
    R(HTTP_DELETE, "/api/v1/keys/{key}", api_keys_revoke, ACCESS_ADMIN, ROUTE_NO_BODY, "keys_revoke"),
    R(HTTP_GET, "/api/v1/audit", api_audit, ACCESS_ADMIN, ROUTE_NO_BODY, "audit"),
    R(HTTP_GET, "/api/v1/remote/snapshots", api_remote_list, ACCESS_ADMIN, ROUTE_NO_BODY, "remote_list"),
    /* spaces and entities */
    R(HTTP_GET, "/api/v1/spaces", api_spaces_list, ACCESS_READ, ROUTE_NO_BODY, "spaces_list"),
    R(HTTP_PUT, S, api_space_put, ACCESS_ADMIN, 0, "space_put"),
    R(HTTP_GET, S, api_space_get, ACCESS_READ, ROUTE_NO_BODY, "space_get"),
    R(HTTP_DELETE, S, api_space_delete, ACCESS_ADMIN, ROUTE_NO_BODY, "space_delete"),
    R(HTTP_GET, S "/collections", api_collections, ACCESS_READ, ROUTE_NO_BODY, "collections"),
    R(HTTP_GET, S "/collections/{collection}/entities", api_entity_list, ACCESS_READ, ROUTE_NO_BODY, "entity_list"),
    R(HTTP_PUT, S "/collections/{collection}/entities/{entity}", api_entity_put, ACCESS_WRITE, 0, "entity_put"),
    R(HTTP_GET, S "/collections/{collection}/entities/{entity}", api_entity_get, ACCESS_READ, ROUTE_NO_BODY, "entity_get"),
    R(HTTP_DELETE, S "/collections/{collection}/entities/{entity}", api_entity_delete, ACCESS_WRITE, ROUTE_NO_BODY, "entity_delete"),
    /* change feed, pushes, conflicts */
    R(HTTP_GET, S "/sync/status", api_sync_status, ACCESS_READ, ROUTE_NO_BODY, "sync_status"),
    R(HTTP_GET, S "/changes", api_changes_get, ACCESS_READ, ROUTE_NO_BODY, "changes_get"),
    R(HTTP_POST, S "/changes", api_changes_post, ACCESS_WRITE, 0, "changes_post"),
    R(HTTP_GET, S "/conflicts", api_conflicts, ACCESS_READ, ROUTE_NO_BODY, "conflicts"),
    R(HTTP_POST, S "/conflicts/{id}/resolve", api_conflict_resolve, ACCESS_WRITE, 0, "conflict_resolve"),
    /* snapshots */
    R(HTTP_POST, S "/snapshots/import", api_snapshot_import, ACCESS_OPERATE, ROUTE_STREAM_BODY, "snapshot_import"),
    R(HTTP_POST, S "/snapshots", api_snapshot_create, ACCESS_OPERATE, 0, "snapshot_create"),
    R(HTTP_GET, S "/snapshots", api_snapshot_list, ACCESS_READ, ROUTE_NO_BODY, "snapshot_list"),
    R(HTTP_GET, S "/snapshots/{id}", api_snapshot_get, ACCESS_READ, ROUTE_NO_BODY, "snapshot_get"),
    R(HTTP_DELETE, S "/snapshots/{id}", api_snapshot_delete, ACCESS_OPERATE, ROUTE_NO_BODY, "snapshot_delete"),
    R(HTTP_GET, S "/snapshots/{id}/download", api_snapshot_download, ACCESS_READ, ROUTE_NO_BODY, "snapshot_download"),
    R(HTTP_GET, S "/snapshots/{id}/export", api_snapshot_export, ACCESS_READ, ROUTE_NO_BODY, "snapshot_export"),
    R(HTTP_GET, S "/snapshots/{id}/preview", api_snapshot_preview, ACCESS_READ, ROUTE_NO_BODY, "snapshot_preview"),
    R(HTTP_POST, S "/snapshots/{id}/restore", api_snapshot_restore, ACCESS_OPERATE, 0, "snapshot_restore"),
    R(HTTP_POST, S "/snapshots/{id}/verify", api_snapshot_verify, ACCESS_OPERATE, ROUTE_NO_BODY, "snapshot_verify"),
    R(HTTP_POST, S "/snapshots/{id}/remote/retry", api_snapshot_remote_retry, ACCESS_OPERATE, ROUTE_NO_BODY,
      "snapshot_remote_retry"),
    /* events */
    R(HTTP_GET, "/api/v1/events", api_events, ACCESS_READ, ROUTE_NO_BODY, "events"),
    /* replication, sync jobs, peers, blobs */
    R(HTTP_POST, S "/sync", api_sync_start, ACCESS_OPERATE, 0, "sync_start"),
    R(HTTP_GET, S "/sync/jobs", api_sync_jobs, ACCESS_READ, ROUTE_NO_BODY, "sync_jobs"),
    R(HTTP_GET, S "/sync/jobs/{id}", api_sync_job, ACCESS_READ, ROUTE_NO_BODY, "sync_job"),
    R(HTTP_GET, S "/peers", api_peers_list, ACCESS_READ, ROUTE_NO_BODY, "peers_list"),
    R(HTTP_PUT, S "/peers/{peer}", api_peer_put, ACCESS_OPERATE, 0, "peer_put"),
    R(HTTP_DELETE, S "/peers/{peer}", api_peer_delete, ACCESS_OPERATE, ROUTE_NO_BODY, "peer_delete"),
    R(HTTP_POST, S "/replicate", api_replicate, ACCESS_WRITE, 0, "replicate"),
    R(HTTP_POST, S "/blobs/missing", api_blobs_missing, ACCESS_READ, 0, "blobs_missing"),
    R(HTTP_PUT, S "/blobs/{sha256}", api_blob_put, ACCESS_WRITE, ROUTE_STREAM_BODY, "blob_put"),
    R(HTTP_GET, S "/blobs/{sha256}", api_blob_get, ACCESS_READ, ROUTE_NO_BODY, "blob_get"),
};

void api_routes_init(struct router *rt)
{
    router_init(rt);
    for (size_t i = 0; i < ARRAY_SIZE(table); i++) router_add(rt, &table[i]);
    const char *hooks = getenv("SNAPSYNC_TEST_HOOKS");
    if (hooks && !strcmp(hooks, "1")) api_test_routes(rt);
}
