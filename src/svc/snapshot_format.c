/* snapshot_format.c - see snapshot_format.h. The bytes of a snapshot file,
 * written and read here only (docs/snapshot-format.md). */
#include "svc/snapshot_format.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/canon.h"
#include "core/entity.h"
#include "core/json.h"
#include "core/names.h"
#include "core/pgzip.h"

#define CHUNK (64 * 1024)
#define LINE_MAX_BYTES (64u << 20)

/* ---- gzip output ---------------------------------------------------------- */

struct snap_gz {
    int fd;
    z_stream zs;
    bool zs_init;
    struct pgz *pz;                  /* several compressor threads, or NULL */
    EVP_MD_CTX *md;
    unsigned char out[CHUNK];
    uint64_t written, limit;
    int err;
};

static int gz_emit(struct snap_gz *g, size_t n)
{
    if (g->limit && g->written + n > g->limit) {
        g->err = ENOSPC;
        return -1;
    }
    if ((g->err = write_full(g->fd, g->out, n)) != 0) return -1;
    if (g->md) EVP_DigestUpdate(g->md, g->out, n);
    g->written += n;
    return 0;
}

static int gz_sink(void *arg, const unsigned char *data, size_t len)
{
    struct snap_gz *g = arg;
    if (g->limit && g->written + len > g->limit) return ENOSPC;
    int e = write_full(g->fd, data, len);
    if (e) return e;
    if (g->md) EVP_DigestUpdate(g->md, data, len);
    g->written += len;
    return 0;
}

static int gz_put(struct snap_gz *g, const char *data, size_t len, int flush)
{
    g->zs.next_in = (Bytef *)data;
    g->zs.avail_in = (uInt)len;
    do {
        g->zs.next_out = g->out;
        g->zs.avail_out = CHUNK;
        int rc = deflate(&g->zs, flush);
        if (rc == Z_STREAM_ERROR) { g->err = EIO; return -1; }
        size_t have = CHUNK - g->zs.avail_out;
        if (have && gz_emit(g, have) < 0) return -1;
    } while (g->zs.avail_out == 0 || (flush == Z_FINISH && g->zs.avail_in > 0));
    return 0;
}

struct snap_gz *snap_gz_new(int fd, int level, int threads, uint64_t fail_after, bool hash)
{
    struct snap_gz *g = xcalloc(1, sizeof *g);
    g->fd = fd;
    g->limit = fail_after;
    if (hash) {
        g->md = EVP_MD_CTX_new();
        EVP_DigestInit_ex(g->md, sha256_md(), NULL);
    }
    if (threads > 1 && level > 0) {
        g->pz = pgz_new(level, threads, gz_sink, g);
    } else if (deflateInit2(&g->zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        snap_gz_free(g);
        return NULL;
    } else {
        g->zs_init = true;
    }
    return g;
}

int snap_gz_write(struct snap_gz *g, const void *data, size_t len)
{
    if (g->err) return g->err;
    if (g->pz) return g->err = pgz_write(g->pz, data, len);
    if (gz_put(g, data, len, Z_NO_FLUSH) < 0) return g->err ? g->err : (g->err = EIO);
    return 0;
}

/* The last bytes go in with the finish, so the deflate calls (and the
 * bytes they make) are the ones a single final write makes. */
int snap_gz_finish(struct snap_gz *g, const void *data, size_t len)
{
    if (g->err) return g->err;
    if (g->pz) {
        struct pgz *pz = g->pz;
        g->pz = NULL;
        if ((g->err = pgz_write(pz, data ? data : "", len)) != 0) {
            pgz_abort(pz);
            return g->err;
        }
        return g->err = pgz_finish(pz);
    }
    if (gz_put(g, data ? data : "", len, Z_FINISH) < 0) return g->err ? g->err : (g->err = EIO);
    return 0;
}

uint64_t snap_gz_written(const struct snap_gz *g) { return g->written; }

void snap_gz_sha256(struct snap_gz *g, char out[65])
{
    unsigned char md[32];
    unsigned int mdl = 32;
    assert(g->md);
    EVP_DigestFinal_ex(g->md, md, &mdl);
    hex_encode(out, md, 32);
}

void snap_gz_free(struct snap_gz *g)
{
    if (!g) return;
    if (g->pz) pgz_abort(g->pz);
    if (g->zs_init) deflateEnd(&g->zs);
    if (g->md) EVP_MD_CTX_free(g->md);
    free(g);
}

/* ---- lines ----------------------------------------------------------------- */

void snap_line_header(struct buf *b, const struct snap_header *h)
{
    buf_puts(b, "{\"format\":\"" SNAP_FORMAT "\"");
    json_kv_str(b, "space", h->space);
    json_kv_str(b, "space_uid", h->space_uid);
    json_kv_u64(b, "server_version", h->server_version);
    json_kv_time(b, "created_at", h->created_at_ms);
    json_kv_str(b, "instance_id", h->instance_id);
    buf_puts(b, ",\"entity_counts\":");
    buf_append(b, h->counts_json, h->counts_len);
    json_kv_u64(b, "entity_total", h->entity_total);
    json_kv_str(b, "snapshot", h->snapshot);
    buf_puts(b, "}\n");
}

/* The entity shape of docs/api.md, live (deleted false), then (v2) the
 * revision history and the conflict records, body verbatim and last: the
 * reader slices a line of this exact layout without parsing it (line_fast),
 * and the body is the rest of the line. */
void snap_line_entity(struct buf *b, const struct snap_entity *e)
{
    buf_reserve(b, e->body_len + e->revs_len + e->conflicts_len + 240);
    buf_puts(b, "{\"collection\":");
    json_cstr(b, e->collection);
    buf_puts(b, ",\"id\":");
    json_cstr(b, e->id);
    buf_puts(b, ",\"rev\":");
    json_cstr(b, e->rev);
    json_kv_u64(b, "version", e->version);
    json_kv_time(b, "created_at", e->created_at);
    json_kv_time(b, "updated_at", e->updated_at);
    json_kv_bool(b, "deleted", false);
    buf_puts(b, ",\"revs\":");
    if (e->revs) {
        buf_append(b, e->revs, e->revs_len);
    } else {
        buf_putc(b, '[');
        json_cstr(b, e->rev);
        buf_putc(b, ']');
    }
    buf_puts(b, ",\"conflicts\":");
    if (e->conflicts) buf_append(b, e->conflicts, e->conflicts_len);
    else buf_puts(b, "[]");
    buf_puts(b, ",\"body\":");
    if (e->body) buf_append(b, e->body, e->body_len);     /* canonical JSON, verbatim */
    else buf_puts(b, "null");
    buf_puts(b, "}\n");
}

/* ---- the writer ------------------------------------------------------------ */

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int writer_fail(struct snap_writer *w, char *err, size_t errlen)
{
    snprintf(err, errlen, "writing the snapshot file failed: %s", strerror(w->err ? w->err : EIO));
    return -1;
}

int snap_writer_open(struct snap_writer *w, const char *tmp_path, int level, int threads, uint64_t fail_after,
                     char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    buf_init(&w->line);
    w->fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    /* the message is the row's error, shown to clients: no path */
    if (w->fd < 0) {
        snprintf(err, errlen, "cannot create the snapshot file: %s", strerror(errno));
        return -1;
    }
    if (!(w->gz = snap_gz_new(w->fd, level, threads, fail_after, true))) {
        snprintf(err, errlen, "zlib init failed");
        return -1;
    }
    return 0;
}

void snap_writer_header(struct snap_writer *w, const struct snap_header *h)
{
    assert(w->line.len == 0 && w->entities == 0);   /* line 1 comes first */
    snap_line_header(&w->line, h);
}

/* Lines reach the compressor in runs of at least CHUNK bytes. */
int snap_writer_entity(struct snap_writer *w, const struct snap_entity *e, char *err, size_t errlen)
{
    snap_line_entity(&w->line, e);
    w->entities++;
    if (w->line.len >= CHUNK) {
        w->raw_bytes += w->line.len;
        if ((w->err = snap_gz_write(w->gz, w->line.data, w->line.len)) != 0) return writer_fail(w, err, errlen);
        buf_reset(&w->line);
    }
    return 0;
}

uint64_t snap_writer_bytes(const struct snap_writer *w) { return w->gz ? snap_gz_written(w->gz) : 0; }

int snap_writer_end(struct snap_writer *w, char *err, size_t errlen)
{
    w->raw_bytes += w->line.len;
    if ((w->err = snap_gz_finish(w->gz, w->line.data, w->line.len)) != 0) return writer_fail(w, err, errlen);
    buf_reset(&w->line);
    return 0;
}

int snap_writer_commit(struct snap_writer *w, const char *tmp_path, const char *path, struct snap_written *out,
                       char *err, size_t errlen)
{
    snap_gz_sha256(w->gz, out->sha256);
    out->size_bytes = snap_gz_written(w->gz);
    out->raw_bytes = w->raw_bytes;
    out->entities = w->entities;
    if (fsync(w->fd) < 0) { w->err = errno; return writer_fail(w, err, errlen); }
    int rc = close(w->fd);
    w->fd = -1;
    if (rc < 0) { w->err = errno; return writer_fail(w, err, errlen); }
    if (rename(tmp_path, path) < 0) { w->err = errno; return writer_fail(w, err, errlen); }
    char dir[1200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        fsync_dir(dir);
    }
    return 0;
}

void snap_writer_close(struct snap_writer *w, const char *tmp_path, bool remove)
{
    snap_gz_free(w->gz);
    w->gz = NULL;
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    buf_free(&w->line);
    if (remove) unlink(tmp_path);
}

/* ---- the reader: gzip in, lines out ---------------------------------------- */

static void rd_msg(char *err, size_t errlen, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void rd_msg(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Refills pending; 0 ok, 1 at the end, -1 on error. The end is clean only
 * when the last gzip member was finished (its trailer read and its CRC and
 * length checked by zlib): a file cut short anywhere is an error. */
static int rd_fill(struct snap_reader *r, char *err, size_t errlen)
{
    z_stream *zs = r->zs;
    if (r->pos > 0) {
        size_t rest = r->pending.len - r->pos;
        memmove(r->pending.data, r->pending.data + r->pos, rest);
        r->pending.len = rest;
        r->pos = 0;
    }
    for (;;) {
        if (zs->avail_in == 0 && !r->eof) {
            ssize_t n = read(r->fd, r->in, CHUNK);
            if (n < 0) {
                if (errno == EINTR) continue;
                rd_msg(err, errlen, "read failed: %s", strerror(errno));
                return -1;
            }
            if (n == 0) {
                r->eof = true;
            } else {
                EVP_DigestUpdate(r->md, r->in, (size_t)n);
                r->compressed += (uint64_t)n;
                zs->next_in = r->in;
                zs->avail_in = (uInt)n;
            }
        }
        if (zs->avail_in == 0 && r->eof) {
            if (!r->in_member) return 1;
            rd_msg(err, errlen, "the file is truncated (the gzip stream does not end)");
            return -1;
        }
        if (!r->in_member) {         /* a member starts (concatenated members are allowed) */
            inflateReset(zs);
            r->in_member = true;
        }
        buf_reserve(&r->pending, CHUNK);
        zs->next_out = (Bytef *)r->pending.data + r->pending.len;
        zs->avail_out = CHUNK;
        int rc = inflate(zs, Z_NO_FLUSH);
        size_t got = CHUNK - zs->avail_out;
        r->pending.len += got;
        r->raw += got;
        if (rc == Z_STREAM_END) {
            r->in_member = false;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            rd_msg(err, errlen, "gzip data is corrupt: %s", zs->msg ? zs->msg : "inflate failed");
            return -1;
        }
        if (got) return 0;
    }
}

/* Next line (without '\n') into line and len, valid until the next call.
 * Returns 1 for a line, 0 at the end, -1 on error. */
static int rd_line(struct snap_reader *r, const char **line, size_t *len, char *err, size_t errlen)
{
    r->line++;
    for (;;) {
        char *start = r->pending.data ? r->pending.data + r->pos : NULL;
        size_t avail = r->pending.len - r->pos;
        char *nl = start ? memchr(start, '\n', avail) : NULL;
        if (nl) {
            *line = start;
            *len = (size_t)(nl - start);
            r->pos += *len + 1;
            return 1;
        }
        if (avail > LINE_MAX_BYTES) {
            rd_msg(err, errlen, "a line is longer than 64 MiB");
            return -1;
        }
        int rc = rd_fill(r, err, errlen);
        if (rc < 0) return -1;
        if (rc == 1) {
            if (r->pending.len - r->pos > 0) {
                rd_msg(err, errlen, "the last line has no newline (truncated file?)");
                return -1;
            }
            return 0;
        }
    }
}

/* ---- entity lines ---------------------------------------------------------------- */

/* A line's rev is never taken (a restore writes new revs, docs/api.md): it
 * is checked for its shape only, as revs were before N was bounded
 * (entity.h REV_N_MAX), so a snapshot taken before that stays readable
 * even if an entity of it had a rev past the bound. */
static bool line_rev_ok(const char *rev)
{
    if (rev_valid(rev)) return true;
    const char *dash = strchr(rev, '-');
    uint64_t n;
    if (!dash || dash == rev || !dash[1] || strlen(rev) >= REV_MAX ||
        parse_u64(rev, (size_t)(dash - rev), UINT64_MAX, &n) < 0 || n == 0)
        return false;
    for (const char *h = dash + 1; *h; h++)
        if (!((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f'))) return false;
    return true;
}

static void rd_entity_free(struct snap_reader *r)
{
    json_decref(r->doc);
    free(r->canon);
    free(r->revs_txt);
    free(r->conf_txt);
    r->doc = NULL;
    r->canon = r->revs_txt = r->conf_txt = NULL;
    r->body_pending = false;
}

static uint64_t time_member(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);
    uint64_t ms = 0;
    if (json_is_string(v) && parse_time_ms(json_string_value(v), json_string_length(v), &ms) < 0) ms = 0;
    return ms;
}

/* A line parsed whole by jansson: the entity shape of the API (v1), plus
 * revs and conflicts (v2, checked by the caller). Any member order, any
 * spacing: what a hand-made or re-encoded file has. */
static int doc_entity(struct snap_reader *r, const char *line, size_t len, struct snap_entity *e, char *err,
                      size_t errlen)
{
    json_error_t je;
    /* a body's values may hold \u0000 (as every write path allows); the
     * names may not */
    r->doc = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!r->doc) {
        rd_msg(err, errlen, "invalid JSON: %.120s", je.text);
        return -1;
    }
    e->collection = json_name(json_object_get(r->doc, "collection"));
    e->id = json_name(json_object_get(r->doc, "id"));
    e->rev = json_name(json_object_get(r->doc, "rev"));
    e->body_json = json_object_get(r->doc, "body");
    if (!e->collection || !name_collection_valid(e->collection, strlen(e->collection)) || !e->id ||
        !name_entity_id_valid(e->id, strlen(e->id)) || !e->rev || !line_rev_ok(e->rev) ||
        !json_is_object(e->body_json) || json_is_true(json_object_get(r->doc, "deleted"))) {
        rd_msg(err, errlen, "not a live entity line (collection, id, rev, body)");
        return -1;
    }
    /* the body as a restore will write it, decided here for every reader
     * (verify, preview, plan, restore): a body any write path would refuse
     * (nested past JSON_MAX_DEPTH, which jansson's load allows) fails the
     * file's check, not only the restore that follows it */
    struct json_err ce;
    if (!(r->canon = entity_canonical_value(e->body_json, &e->body_len, &ce))) {
        rd_msg(err, errlen, "the body cannot be stored: %.120s", ce.message);
        return -1;
    }
    e->body = r->canon;
    e->version = (uint64_t)json_integer_value(json_object_get(r->doc, "version"));
    e->created_at = time_member(r->doc, "created_at");
    e->updated_at = time_member(r->doc, "updated_at");
    return 0;
}

/* ---- v2: revs and conflicts ------------------------------------------------------- */

#define V2_REVS_MSG "\"revs\" is not the revision history: an array of revs, newest first, that starts with rev"
#define V2_CONFLICTS_MSG "\"conflicts\" is not an array of conflict records {\"rev\",\"deleted\",\"body\"}"

/* rev itself and the earlier revs a row keeps: REV_HISTORY in all */
static int v2_revs_check(json_t *revs, const char *rev, char *err, size_t errlen)
{
    size_t n = json_array_size(revs);
    if (!json_is_array(revs) || n < 1 || n > REV_HISTORY) goto bad;
    for (size_t k = 0; k < n; k++) {
        const char *x = json_name(json_array_get(revs, k));
        if (!x || !line_rev_ok(x) || (k == 0 && strcmp(x, rev))) goto bad;
    }
    return 0;
bad:
    rd_msg(err, errlen, V2_REVS_MSG);
    return -1;
}

/* each record: a rev, deleted, and an object body (null when deleted) */
static int v2_conflicts_check(json_t *cf, char *err, size_t errlen)
{
    size_t k;
    json_t *c;
    if (!json_is_array(cf)) goto bad;
    json_array_foreach(cf, k, c) {
        const char *x = json_name(json_object_get(c, "rev"));
        json_t *del = json_object_get(c, "deleted"), *body = json_object_get(c, "body");
        if (!json_is_object(c) || !x || !line_rev_ok(x) || !json_is_boolean(del) ||
            !(json_is_object(body) || (json_is_true(del) && json_is_null(body))))
            goto bad;
    }
    return 0;
bad:
    rd_msg(err, errlen, V2_CONFLICTS_MSG);
    return -1;
}

static char *dump_compact(json_t *v, size_t *len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) abort();                 /* only on out-of-memory */
    *len = strlen(s);
    return s;
}

/* A v2 line parsed whole: its revs and conflicts as compact JSON text. */
static int v2_doc_entity(struct snap_reader *r, const char *line, size_t len, struct snap_entity *e, char *err,
                         size_t errlen)
{
    if (doc_entity(r, line, len, e, err, errlen) < 0) return -1;
    json_t *revs = json_object_get(r->doc, "revs"), *cf = json_object_get(r->doc, "conflicts");
    if (!revs) {
        rd_msg(err, errlen, "not a v2 entity line: \"revs\" is missing");
        return -1;
    }
    if (v2_revs_check(revs, e->rev, err, errlen) < 0 || (cf && v2_conflicts_check(cf, err, errlen) < 0)) return -1;
    r->revs_txt = dump_compact(revs, &e->revs_len);
    e->revs = r->revs_txt;
    if (json_array_size(cf)) {
        r->conf_txt = dump_compact(cf, &e->conflicts_len);
        e->conflicts = r->conf_txt;
    }
    return 0;
}

/* ---- lines in the writer's own layout, read as text -------------------------------
 * A line exactly as snap_line_entity writes it is cut into its parts
 * without a parse: names and revs cannot hold escapes, times and numbers
 * have one spelling, and the body is the rest of the line. What is cut out
 * is checked as the parse would check it; only the body is left to check
 * (body_ok), and a caller comparing bodies with stored ones checks only
 * those that differ (snap_reader_body). Any other line goes to the parse. */

struct cut {
    const char *p, *end;
};

static bool cut_lit(struct cut *c, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n)) return false;
    c->p += n;
    return true;
}

/* "name" (no escapes, no control bytes) into out */
static bool cut_str(struct cut *c, char *out, size_t cap)
{
    if (c->p >= c->end || *c->p != '"') return false;
    const char *s = c->p + 1, *q = memchr(s, '"', (size_t)(c->end - s));
    if (!q || (size_t)(q - s) >= cap || memchr(s, '\\', (size_t)(q - s))) return false;
    memcpy(out, s, (size_t)(q - s));
    out[q - s] = '\0';
    c->p = q + 1;
    return true;
}

static bool cut_u64(struct cut *c, uint64_t *v)
{
    const char *s = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    return c->p > s && parse_u64(s, (size_t)(c->p - s), INT64_MAX, v) == 0 && (c->p - s == 1 || *s != '0');
}

static bool cut_time(struct cut *c, uint64_t *ms)
{
    char t[40];
    return cut_str(c, t, sizeof t) && parse_time_ms(t, strlen(t), ms) == 0;
}

/* ["rev","older",...]: the history as written, first == rev */
static bool cut_revs(struct cut *c, const char *rev, struct snap_entity *e)
{
    const char *start = c->p;
    char x[REV_MAX];
    if (!cut_lit(c, "[")) return false;
    for (size_t n = 0;; n++) {
        if (n >= REV_HISTORY || !cut_str(c, x, sizeof x) || !line_rev_ok(x) || (n == 0 && strcmp(x, rev))) return false;
        if (cut_lit(c, "]")) break;
        if (!cut_lit(c, ",")) return false;
    }
    e->revs = start;
    e->revs_len = (size_t)(c->p - start);
    return true;
}

/* [] or an array of records, whose end is found by a scan that knows
 * strings; records are rare, so they are parsed to be checked */
static bool cut_conflicts(struct cut *c, struct snap_entity *e)
{
    if (cut_lit(c, "[]")) return true;
    const char *start = c->p, *p = c->p;
    int depth = 0;
    bool in_str = false;
    for (; p < c->end; p++) {
        if (in_str) {
            if (*p == '\\') p++;
            else if (*p == '"') in_str = false;
        } else if (*p == '"') {
            in_str = true;
        } else if (*p == '[' || *p == '{') {
            depth++;
        } else if ((*p == ']' || *p == '}') && --depth == 0) {
            break;
        }
    }
    if (p >= c->end || *start != '[') return false;
    json_error_t je;
    json_t *cf = json_loadb(start, (size_t)(p + 1 - start), JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    char why[8];
    bool ok = cf && v2_conflicts_check(cf, why, sizeof why) == 0;
    json_decref(cf);
    if (!ok) return false;           /* the parse says what is wrong */
    e->conflicts = start;
    e->conflicts_len = (size_t)(p + 1 - start);
    c->p = p + 1;
    return true;
}

static bool line_fast(struct snap_reader *r, const char *line, size_t len, struct snap_entity *e)
{
    struct cut c = {line, line + len};
    struct snap_entity f = {0};
    if (!cut_lit(&c, "{\"collection\":") || !cut_str(&c, r->fc, sizeof r->fc) ||
        !name_collection_valid(r->fc, strlen(r->fc)) || !cut_lit(&c, ",\"id\":") ||
        !cut_str(&c, r->fi, sizeof r->fi) || !name_entity_id_valid(r->fi, strlen(r->fi)) ||
        !cut_lit(&c, ",\"rev\":") || !cut_str(&c, r->frev, sizeof r->frev) || !line_rev_ok(r->frev) ||
        !cut_lit(&c, ",\"version\":") || !cut_u64(&c, &f.version) || !cut_lit(&c, ",\"created_at\":") ||
        !cut_time(&c, &f.created_at) || !cut_lit(&c, ",\"updated_at\":") || !cut_time(&c, &f.updated_at) ||
        !cut_lit(&c, ",\"deleted\":false,"))
        return false;
    if (r->version == SNAP_FORMAT_V2 &&
        !(cut_lit(&c, "\"revs\":") && cut_revs(&c, r->frev, &f) && cut_lit(&c, ",\"conflicts\":") &&
          cut_conflicts(&c, &f) && cut_lit(&c, ",")))
        return false;
    /* the body: an object that runs to the line's last byte, the closing
     * brace of the line */
    if (!cut_lit(&c, "\"body\":{") || c.end - c.p < 2 || c.end[-1] != '}' || c.end[-2] != '}') return false;
    f.body = c.p - 1;
    f.body_len = (size_t)(c.end - 1 - f.body);
    f.collection = r->fc;
    f.id = r->fi;
    f.rev = r->frev;
    *e = f;
    return true;
}

/* The body cut out of the line is what a restore writes only when it is
 * canonical already (json_canonical gives it back unchanged); any other
 * body goes through the parse, which canonicalizes it or says why not.
 * \u0000 goes to the parse too: it decides about such keys. */
static bool body_ok(const struct snap_entity *e)
{
    if (memmem(e->body, e->body_len, "\\u0000", 6)) return false;
    size_t cl;
    struct json_err je;
    char *c = json_canonical(e->body, e->body_len, true, &cl, &je);
    bool same = c && cl == e->body_len && !memcmp(c, e->body, cl);
    free(c);
    return same;
}

/* The line read whole, as the version reads it. */
static int line_parse(struct snap_reader *r, struct snap_entity *e, char *err, size_t errlen)
{
    int fv = e->format_version;
    memset(e, 0, sizeof *e);
    e->format_version = fv;
    switch (r->version) {
    case SNAP_FORMAT_V1:
        return doc_entity(r, r->cur_line, r->cur_len, e, err, errlen);
    case SNAP_FORMAT_V2:
        return v2_doc_entity(r, r->cur_line, r->cur_len, e, err, errlen);
    default:
        assert(!"snap_reader_open admits known versions only");
        return -1;
    }
}

int snap_reader_body(struct snap_reader *r, struct snap_entity *e, char *err, size_t errlen)
{
    if (!r->body_pending) return 0;
    r->body_pending = false;
    if (body_ok(e)) return 0;
    char c[64], i[130];                  /* the key stays what the order check saw */
    snprintf(c, sizeof c, "%s", e->collection);
    snprintf(i, sizeof i, "%s", e->id);
    if (line_parse(r, e, err, errlen) < 0) return -1;
    if (strcmp(c, e->collection) || strcmp(i, e->id)) {
        rd_msg(err, errlen, "not a live entity line (collection, id, rev, body)");
        return -1;
    }
    return 0;
}

/* ---- the reader's API --------------------------------------------------------- */

int snap_reader_open(struct snap_reader *r, const char *path, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        /* never the path: this text reaches clients */
        if (errno == ENOENT) rd_msg(err, errlen, "%s", SNAP_MISSING);
        else rd_msg(err, errlen, "cannot open the file: %s", strerror(errno));
        return -1;
    }
    z_stream *zs = xcalloc(1, sizeof *zs);
    if (inflateInit2(zs, 15 + 16) != Z_OK) abort();
    r->zs = zs;
    r->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(r->md, sha256_md(), NULL);
    r->in = xmalloc(CHUNK);
    const char *line;
    size_t len;
    int lr = rd_line(r, &line, &len, err, errlen);
    if (lr <= 0) {
        if (lr == 0) rd_msg(err, errlen, "the file is empty");
        snap_reader_close(r);
        return -1;
    }
    /* the one place the layout is chosen: a new format adds its name here
     * and a branch in snap_reader_next */
    json_error_t je;
    r->hdr = json_loadb(line, len, 0, &je);
    const char *fmt = r->hdr ? json_name(json_object_get(r->hdr, "format")) : NULL;
    if (fmt && !strcmp(fmt, SNAP_FORMAT_V1_NAME)) r->version = SNAP_FORMAT_V1;
    else if (fmt && !strcmp(fmt, SNAP_FORMAT_V2_NAME)) r->version = SNAP_FORMAT_V2;
    if (!r->version) {
        rd_msg(err, errlen, "line 1 is not a %s or %s header", SNAP_FORMAT_V1_NAME, SNAP_FORMAT_V2_NAME);
        snap_reader_close(r);
        return -2;
    }
    return 0;
}

static const char *str_or(const char *s) { return s ? s : ""; }

int snap_reader_header(struct snap_reader *r, struct snap_header *h, char *err, size_t errlen)
{
    json_t *hdr = r->hdr;
    assert(hdr && r->version);       /* snap_reader_open succeeded */
    memset(h, 0, sizeof *h);
    h->version = r->version;
    snprintf(h->space, sizeof h->space, "%s", str_or(json_name(json_object_get(hdr, "space"))));
    snprintf(h->space_uid, sizeof h->space_uid, "%s", str_or(json_name(json_object_get(hdr, "space_uid"))));
    snprintf(h->instance_id, sizeof h->instance_id, "%s", str_or(json_name(json_object_get(hdr, "instance_id"))));
    snprintf(h->snapshot, sizeof h->snapshot, "%s", str_or(json_name(json_object_get(hdr, "snapshot"))));
    h->server_version = (uint64_t)json_integer_value(json_object_get(hdr, "server_version"));
    json_t *counts = json_object_get(hdr, "entity_counts");
    json_t *total = json_object_get(hdr, "entity_total");
    if (!json_is_object(counts) || !json_is_integer(total) || !name_space_valid(h->space, strlen(h->space))) {
        rd_msg(err, errlen, "the header lacks space, entity_counts or entity_total");
        return -1;
    }
    h->entity_total = (uint64_t)json_integer_value(total);
    json_t *created = json_object_get(hdr, "created_at");
    if (!json_is_string(created) ||
        parse_time_ms(json_string_value(created), json_string_length(created), &h->created_at_ms) < 0) {
        rd_msg(err, errlen, "the header's created_at is not a time like 2026-11-24T14:48:26.801Z");
        return -1;
    }
    return 0;
}

json_t *snap_reader_counts(struct snap_reader *r) { return json_object_get(r->hdr, "entity_counts"); }

int snap_reader_next(struct snap_reader *r, struct snap_entity *e, char *err, size_t errlen)
{
    const char *line;
    size_t len;
    rd_entity_free(r);
    memset(e, 0, sizeof *e);
    int lr = rd_line(r, &line, &len, err, errlen);
    if (lr <= 0) return lr;
    r->cur_line = line;
    r->cur_len = len;
    e->format_version = r->version;
    /* the one place a line's layout follows the file's version: both
     * versions' lines as the writer writes them are cut as text
     * (line_fast knows v2's members); anything else is parsed by the
     * version's own reader (line_parse) */
    int rc = 0;
    switch (r->version) {
    case SNAP_FORMAT_V1:
    case SNAP_FORMAT_V2:
        if (!line_fast(r, line, len, e)) rc = line_parse(r, e, err, errlen);
        else if (r->defer_body) r->body_pending = true;
        else if (!body_ok(e)) rc = line_parse(r, e, err, errlen);
        e->format_version = r->version;
        break;
    default:
        assert(!"snap_reader_open admits known versions only");
    }
    if (rc < 0) {
        rd_entity_free(r);
        return -1;
    }
    /* a walk over the file is right only over keys in order (a restore's
     * merge relies on it): a file out of order is refused by every reader */
    if (r->prev_c[0] && snap_key_cmp(r->prev_c, r->prev_i, e->collection, e->id) >= 0) {
        rd_msg(err, errlen, "entities are not in (collection, id) order");
        rd_entity_free(r);
        return -1;
    }
    snprintf(r->prev_c, sizeof r->prev_c, "%s", e->collection);
    snprintf(r->prev_i, sizeof r->prev_i, "%s", e->id);
    return 1;
}

void snap_reader_sha256(struct snap_reader *r, char out[65])
{
    unsigned char md[32];
    unsigned int l = 32;
    EVP_DigestFinal_ex(r->md, md, &l);
    hex_encode(out, md, 32);
}

void snap_reader_close(struct snap_reader *r)
{
    rd_entity_free(r);
    json_decref(r->hdr);
    r->hdr = NULL;
    if (r->fd >= 0) close(r->fd);
    if (r->zs) {
        inflateEnd(r->zs);
        free(r->zs);
    }
    if (r->md) EVP_MD_CTX_free(r->md);
    free(r->in);
    buf_free(&r->pending);
    r->zs = r->md = NULL;
    r->in = NULL;
    r->fd = -1;
}

int snap_key_cmp(const char *c1, const char *i1, const char *c2, const char *i2)
{
    int c = strcmp(c1, c2);
    return c ? c : strcmp(i1, i2);
}

/* ---- blobs ---------------------------------------------------------------------- */

/* The blobs a body names in its "_blobs" (valid hashes only). */
void blob_set_add(struct blob_set *s, json_t *body)
{
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(body, "_blobs"), i, h) {
        const char *x = json_name(h);
        if (!x || !name_sha256_valid(x, strlen(x))) continue;
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 64;
            s->v = xrealloc(s->v, s->cap * sizeof *s->v);
        }
        memcpy(s->v[s->n++], x, 65);
    }
}

void blob_set_add_text(struct blob_set *s, const char *body, size_t len)
{
    if (!body || !memmem(body, len, "\"_blobs\":", 9)) return;
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_ALLOW_NUL, &je);      /* values may hold \u0000 */
    if (v) blob_set_add(s, v);
    json_decref(v);
}

static int cmp65(const void *a, const void *b) { return memcmp(a, b, 64); }

void blob_set_finish(struct blob_set *s, struct buf *out)
{
    if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp65);
    buf_putc(out, '[');
    for (size_t i = 0, k = 0; i < s->n; i++) {
        if (i && !memcmp(s->v[i], s->v[i - 1], 64)) continue;
        if (k++) buf_putc(out, ',');
        json_str(out, s->v[i], 64);
    }
    buf_putc(out, ']');
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* ---- the full check ------------------------------------------------------------ */

int snap_check_open(struct snap_check *c, const char *path, struct snap_summary *sum, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    memset(sum, 0, sizeof *sum);
    if (snap_reader_open(&c->rd, path, err, errlen) < 0) return -1;
    c->opened = true;
    c->seen = json_object();
    return 0;
}

void snap_check_close(struct snap_check *c)
{
    if (!c->opened) return;
    json_decref(c->seen);
    c->seen = NULL;
    free(c->blobs.v);
    c->blobs.v = NULL;
    snap_reader_close(&c->rd);
    c->opened = false;
}

static int check_header(struct snap_check *c, struct snap_summary *sum, char *err, size_t errlen)
{
    struct snap_header h;
    if (snap_reader_header(&c->rd, &h, err, errlen) < 0) return -1;
    snprintf(sum->space, sizeof sum->space, "%s", h.space);
    snprintf(sum->space_uid, sizeof sum->space_uid, "%s", h.space_uid);
    snprintf(sum->instance_id, sizeof sum->instance_id, "%s", h.instance_id);
    sum->server_version = h.server_version;
    sum->created_at_ms = h.created_at_ms;
    sum->lines = 1;
    c->header_done = true;
    return 0;
}

/* the end: counts against the header, and the summary */
static int check_end(struct snap_check *c, struct snap_summary *sum, char *err, size_t errlen)
{
    json_t *counts = snap_reader_counts(&c->rd);
    json_t *total = json_object_get(c->rd.hdr, "entity_total");
    if ((uint64_t)json_integer_value(total) != sum->entity_total || !json_equal(counts, c->seen)) {
        snprintf(err, errlen, "the header counts %lld entities but the file holds %llu (or per-collection counts differ)",
                 (long long)json_integer_value(total), (unsigned long long)sum->entity_total);
        return -1;
    }
    sum->raw_bytes = c->rd.raw;
    sum->size_bytes = c->rd.compressed;
    snap_reader_sha256(&c->rd, sum->sha256);
    sum->counts_json = json_dumps(counts, JSON_COMPACT | JSON_SORT_KEYS);
    struct buf bl;
    buf_init(&bl);
    blob_set_finish(&c->blobs, &bl);
    sum->blobs_json = buf_steal(&bl, NULL);
    return 0;
}

int snap_check_step(struct snap_check *c, uint64_t budget_ns, struct snap_summary *sum, char *err, size_t errlen)
{
    assert(c->opened && c->seen);   /* after a snap_check_open that succeeded */
    if (!c->header_done && check_header(c, sum, err, errlen) < 0) return -1;
    uint64_t until = budget_ns ? now_ns_mono() + budget_ns : 0;
    struct snap_entity e;
    char why[160];
    int r;
    while ((r = snap_reader_next(&c->rd, &e, why, sizeof why)) == 1) {
        sum->lines++;
        json_t *n = json_object_get(c->seen, e.collection);
        json_object_set_new(c->seen, e.collection, json_integer((n ? json_integer_value(n) : 0) + 1));
        sum->entity_total++;
        if (e.body_json) blob_set_add(&c->blobs, e.body_json);
        else blob_set_add_text(&c->blobs, e.body, e.body_len);
        if (until && sum->lines % 64 == 0 && now_ns_mono() >= until) return 1;
    }
    if (r < 0) {
        snprintf(err, errlen, "line %llu: %s", (unsigned long long)c->rd.line, why);
        return -1;
    }
    return check_end(c, sum, err, errlen);
}

int snap_verify_file(const char *path, struct snap_summary *sum, char *err, size_t errlen)
{
    struct snap_check c;
    int rc = snap_check_open(&c, path, sum, err, errlen);
    if (rc == 0) rc = snap_check_step(&c, 0, sum, err, errlen);
    snap_check_close(&c);
    return rc < 0 ? -1 : 0;
}
