/* export.h - a snapshot's entities as a JSON array or as CSV, streamed
 * straight from its file through the format's reader (GET
 * .../snapshots/{id}/export). Memory does not grow with the file: one
 * chunk of output at a time, and for CSV the set of columns, capped.
 *
 * CSV (RFC 4180, CRLF, a header row): collection, id, rev, version,
 * updated_at, then one column per top-level member of the bodies, in the
 * order first seen over the exported entities. Strings are their text,
 * numbers and booleans their JSON text, null and absent members empty,
 * objects and arrays their canonical JSON text. The columns must be known
 * before the first row, so the file is read twice (both on the pool).
 * Past EXPORT_MAX_COLUMNS columns (or EXPORT_MAX_NAME_BYTES of their
 * names), the members without a column go, as a JSON object, into one last
 * column "_more": nothing is dropped, and the header stays bounded.
 *
 * Threads: export_start and the stream's callbacks on the loop; the reads,
 * formatting and compression on the threadpool, one job at a time per
 * export. The CSV helpers are pure (any thread; unit-tested).
 */
#ifndef SNAPSYNC_EXPORT_H
#define SNAPSYNC_EXPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

struct http_req;

#define EXPORT_MAX_COLUMNS 1000          /* body columns, besides the five fixed ones and "_more" */
#define EXPORT_MAX_NAME_BYTES (64u << 10) /* their names, in all */
#define EXPORT_MORE "_more"

enum export_format { EXPORT_JSON, EXPORT_CSV };

struct export_params {
    const char *space, *id;          /* the snapshot */
    const char *path;                /* its file */
    const char *sha256;              /* as recorded: checked at the end of every read */
    const char *collection;          /* "" or NULL: every collection */
    enum export_format format;
    bool gzip;                       /* the client accepts gzip */
    const char *actor, *remote;      /* who reads, for an integrity mark */
};

/* Loop: answers r with the export: 422 snapshot_corrupt before any byte
 * when the file is missing or damaged at its start (for CSV, anywhere: the
 * first pass reads it all), else 200 streamed; a file found damaged later
 * aborts the body (the connection closes before its end), as a download
 * does. Either way a damaged file marks the snapshot corrupt. */
void export_start(struct http_req *r, const struct export_params *p);

/* ---- CSV pieces (pure) ---- */

/* One field, quoted when it holds a comma, a double quote, CR or LF (a
 * double quote doubled), as RFC 4180 says. */
void export_csv_field(struct buf *b, const char *s, size_t len);

/* The body columns, in first-seen order. */
struct export_cols {
    json_t *index;                   /* name -> column number (a jansson object: a hash table) */
    char **names;
    size_t n, name_bytes;
    bool more;                       /* a member had no room: the "_more" column exists */
};
void export_cols_init(struct export_cols *c);
void export_cols_free(struct export_cols *c);
/* Adds the body's top-level members (canonical JSON object text). -1 when
 * the body is not an object. */
int export_cols_add_body(struct export_cols *c, const char *body, size_t len);
/* The header row (CRLF-terminated). */
void export_csv_header(struct buf *b, const struct export_cols *c);
/* One entity's row (CRLF-terminated): the fixed fields, then the body's
 * members in the columns' order. -1 when the body is not an object. */
int export_csv_row(struct buf *b, const struct export_cols *c, const char *collection, const char *id,
                   const char *rev, uint64_t version, uint64_t updated_at, const char *body, size_t len);

#endif
