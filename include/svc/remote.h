/* remote.h - off-site snapshots: copies of completed snapshots on an S3
 * bucket or a WebDAV server, optionally encrypted to age recipients, and
 * the way back (list, fetch, import) on any machine with the same remote.
 *
 * Layout on the remote (docs/operations.md, "Off-site backups"):
 *   <prefix>/<instance_id>/<space>/<snapshot id>.ndjson.gz[.age]   the file
 *   <prefix>/<instance_id>/<space>/<snapshot id>.manifest.json      beside it
 * The manifest is written after the file was uploaded and checked, so a
 * manifest names a complete object; listing reads manifests only. With
 * encryption, the manifest keeps in clear what listing needs (ids, kind,
 * time, the object's size and sha256) and seals the rest (counts, the
 * file's own sha256, the note) in an age-encrypted member.
 *
 * The upload engine (remote.c): a snapshot of a kind in --remote-kinds that
 * completes gets a row in snapshot_remote (pending); one upload runs at a
 * time, streamed from the file: a pool job reads (and encrypts) the next
 * MiB while curl sends the previous one on the loop (remote_http.h). S3
 * objects above --remote-part-size go up as a multipart upload. After the
 * upload the object's size (and, on S3, its ETag) is checked, then the
 * manifest goes up and only then is the row marked uploaded. Transient
 * failures are retried with backoff; 401/403/404 end at once. Each step is
 * an SSE `snapshot` event; the end is counted, audited and logged. A
 * restart resumes the rows still pending or uploading (from the start).
 * Retention (--remote-keep-scheduled / -pre-restore) removes this
 * instance's own objects only.
 *
 * Threads: loop unless a name says otherwise (`_work` on the pool, `_apply`
 * on the writer).
 */
#ifndef SNAPSYNC_REMOTE_H
#define SNAPSYNC_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/age.h"
#include "core/cli.h"
#include "core/err.h"
#include "core/util.h"
#include "svc/snapshot.h"

struct server;

enum rt_kind { RT_S3, RT_DAV };

/* The remote as configured: read once at start (main thread), then
 * read-only. The secrets live here and are handed to curl only. */
struct rtarget {
    enum rt_kind kind;
    char base[700];                  /* S3: endpoint/bucket; WebDAV: scheme://host[:port] */
    char prefix[400];                /* key prefix / URL path, no leading or trailing '/' (may be "") */
    char display[1100];              /* the remote without credentials, for logs and /status */
    char userpwd[700];               /* Basic or S3 key pair: a secret */
    char sigv4[128];                 /* "aws:amz:REGION:s3" (S3) */
    char kinds[128];
    uint64_t part_size, keep_scheduled, keep_pre_restore, retry_ms, attempts;
    long stall_ms;
    struct age_key recipients[AGE_MAX_RECIPIENTS];
    int nrecipients;
    struct age_key ids[AGE_MAX_RECIPIENTS];
    int nids;
};

/* Reads cfg's remote options into t (credentials from their file or the
 * environment, recipients, identities). 0 when no remote is configured
 * (t->base empty), 1 when one is, -1 with err (a line for stderr: the
 * server exits 2). Main thread. */
int remote_config(const struct config *cfg, struct rtarget *t, char *err, size_t errlen);

/* The target the server runs with (remote_init), or NULL. */
const struct rtarget *remote_target(struct server *srv);

/* Starts the engine: installs the snapshot hook, resumes unfinished
 * uploads (a pool read; srv->loading counts it). Loop, before listening. */
void remote_init(struct server *srv, const struct rtarget *t);
void remote_free(struct server *srv);

/* ---- the way back (remote_fetch.c) ----------------------------------------- */

/* What a list or fetch reports. */
typedef void (*remote_list_cb)(void *arg, const struct err *e, struct buf *json);
struct remote_list_req {
    const char *space, *instance;    /* "" or NULL: any */
};
/* {"remote": display, "snapshots": [manifest's listing fields + key]},
 * newest first. */
int remote_list(struct server *srv, const struct remote_list_req *q, remote_list_cb cb, void *arg);

struct remote_fetched {
    struct snap_summary sum;         /* the verified file (counts_json, blobs_json owned by the fetch) */
    const char *manifest_instance, *manifest_space, *manifest_kind;
};
typedef void (*remote_fetch_cb)(void *arg, const struct err *e, const struct remote_fetched *f);
/* Streams key down to tmp_path (decrypting with the identities), checks
 * the object's sha256, the file in full and its sha256 against the
 * manifest, then renames it to path. On any failure nothing is left at
 * tmp_path or path (422 snapshot_corrupt for a file that is not what its
 * manifest says, 404 for a key that is not there). */
int remote_fetch(struct server *srv, const char *key, const char *tmp_path, const char *path, remote_fetch_cb cb,
                 void *arg);

/* POST .../snapshots/import {"remote": key}: remote_fetch into the space's
 * snapshot directory, then recorded like an uploaded import. The caller
 * set the space busy; it is cleared at the end. */
struct remote_import_req {
    const char *space, *key, *actor, *remote;
};
void remote_import_start(struct server *srv, struct http_req *r, const struct remote_import_req *q,
                         snap_answer_fn answer);

/* POST .../snapshots/{id}/remote/retry: a failed upload back to pending
 * with its full count of attempts, audited (snapshot.remote_retry), and
 * queued. 202 {"snapshot","remote":{...}}; 404 when the snapshot has no
 * upload row in the space; 409 remote_not_failed when it is not failed. */
struct remote_retry_req {
    const char *space, *id, *actor, *remote;
};
void remote_retry(struct server *srv, struct http_req *r, const struct remote_retry_req *q, snap_answer_fn answer);

/* A key as a client gave it: shape and prefix checked; the manifest's key
 * into mkey. 0, or -1 with why. */
int remote_key_check(const struct rtarget *t, const char *key, char *mkey, size_t cap, char *why, size_t whylen);

#endif
