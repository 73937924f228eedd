/* snapshot_format.h - the snapshot file format (docs/snapshot-format.md):
 * the only code that writes or reads its bytes.
 *
 * A file is one gzip stream of NDJSON: a header line, then one line per
 * live entity in (collection, id) order. The writer compresses (on several
 * threads when asked, core/pgzip.h) and hashes the compressed bytes as it
 * writes them; the reader decompresses, hashes the same bytes and hands out
 * one parsed line at a time. Which layout the lines have is decided by the
 * header's "format" in one place (snap_reader_open): v2 is a
 * branch there (and in snap_reader_next) and v1 files still read.
 *
 * Threads: none of its own. Every call blocks on file I/O, so the server
 * makes them from threadpool jobs (`_work`) only; `snapsync verify` and the
 * tests call them directly. A writer, reader or check belongs to one thread
 * at a time (the background check hands one from slice to slice).
 */
#ifndef SNAPSYNC_SNAPSHOT_FORMAT_H
#define SNAPSYNC_SNAPSHOT_FORMAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/entity.h"
#include "core/util.h"

#define SNAP_FORMAT_V1_NAME "snapsync.snapshot.v1"
#define SNAP_FORMAT_V2_NAME "snapsync.snapshot.v2"
#define SNAP_FORMAT SNAP_FORMAT_V2_NAME  /* what new files are written as */
#define SNAP_FORMAT_V1 1
#define SNAP_FORMAT_V2 2
/* the message of a file that is not there (a row's integrity_error too) */
#define SNAP_MISSING "the snapshot file is missing"

/* Line 1. Writer: filled by the caller. Reader: filled from the file. */
struct snap_header {
    int version;                     /* SNAP_FORMAT_V1 or SNAP_FORMAT_V2 */
    char space[64], space_uid[27], instance_id[27], snapshot[27];
    uint64_t server_version, entity_total;
    uint64_t created_at_ms;          /* RFC 3339 with milliseconds in the file */
    const char *counts_json;         /* writer: entity_counts as JSON, {"issues":3,...} */
    size_t counts_len;
};

/* One entity line. The reader's strings and slices point into its own
 * memory, valid until the next snap_reader_next() or snap_reader_close().
 * Slices are not NUL-terminated: use their _len. */
struct snap_entity {
    const char *collection, *id, *rev;
    uint64_t version, created_at, updated_at;   /* version: the entity's change counter */
    const char *body;                /* canonical JSON, as stored (the reader's: as a restore writes it) */
    size_t body_len;
    /* reader only: the parsed body, or NULL when the line was read as text
     * (a line in the writer's own layout with a canonical body is not
     * parsed); blob_set_add_text(body, body_len) works in both cases */
    json_t *body_json;
    /* v2 only (NULL and 0 in a v1 file; the writer writes a v2 line's
     * "revs" from rev alone and "conflicts":[] when they are NULL):
     * revs: the JSON text of the revision history, newest first, rev
     * itself first: ["3-ab…","2-cd…","1-ef…"], as GET /changes?style=all_revs
     * gives it. conflicts: the JSON text of the pending conflict records,
     * [{"rev":…,"deleted":false,"body":{…}},…] (body canonical or null), or
     * NULL when there are none. */
    const char *revs;
    size_t revs_len;
    const char *conflicts;
    size_t conflicts_len;
    int format_version;              /* reader: the file's format, SNAP_FORMAT_V1 or SNAP_FORMAT_V2 */
};

/* ---- writing --------------------------------------------------------------
 * A gzip output over an open fd, hashing what it writes: the file's bytes
 * (a snapshot) or an upload being compressed into one (import). */
struct snap_gz;
/* threads > 1 with level > 0 compresses on that many threads. fail_after:
 * a test hook, ENOSPC once that many bytes are written (0: off). hash:
 * compute the sha256 of the output. NULL when zlib cannot start. */
struct snap_gz *snap_gz_new(int fd, int level, int threads, uint64_t fail_after, bool hash);
/* 0 or an errno; after an error the stream is unusable. */
int snap_gz_write(struct snap_gz *g, const void *data, size_t len);
/* Writes the last len bytes (data may be NULL when 0) and ends the stream. */
int snap_gz_finish(struct snap_gz *g, const void *data, size_t len);
uint64_t snap_gz_written(const struct snap_gz *g);
void snap_gz_sha256(struct snap_gz *g, char out[65]);   /* after finish, once */
void snap_gz_free(struct snap_gz *g);                   /* does not close the fd */

/* A snapshot file written to a temp path, then committed (fsync, rename to
 * its final name, fsync of the directory). Messages never name the path:
 * they become the row's error, which clients see. */
struct snap_writer {
    int fd;
    struct snap_gz *gz;
    struct buf line;                 /* lines not yet handed to the compressor */
    uint64_t raw_bytes, entities;
    int err;                         /* the first write error (errno) */
};
struct snap_written {
    uint64_t raw_bytes, size_bytes, entities;
    char sha256[65];
};
int snap_writer_open(struct snap_writer *w, const char *tmp_path, int level, int threads, uint64_t fail_after,
                     char *err, size_t errlen);
void snap_writer_header(struct snap_writer *w, const struct snap_header *h);
int snap_writer_entity(struct snap_writer *w, const struct snap_entity *e, char *err, size_t errlen);
uint64_t snap_writer_bytes(const struct snap_writer *w);   /* compressed so far */
/* Ends the gzip stream (nothing is durable yet). */
int snap_writer_end(struct snap_writer *w, char *err, size_t errlen);
/* fsync, close, rename tmp_path to path, fsync its directory; fills out. */
int snap_writer_commit(struct snap_writer *w, const char *tmp_path, const char *path, struct snap_written *out,
                       char *err, size_t errlen);
/* Frees what is left; remove: unlink tmp_path (a failed write). */
void snap_writer_close(struct snap_writer *w, const char *tmp_path, bool remove);

/* The bytes of one line, '\n' included (the writer's; exposed for tests). */
void snap_line_header(struct buf *b, const struct snap_header *h);
void snap_line_entity(struct buf *b, const struct snap_entity *e);

/* ---- reading ---------------------------------------------------------------
 * open reads line 1 and picks the layout from its "format"; next hands out
 * the entity lines, checking each one (JSON, names, rev, object body that
 * can be stored) and their order. The gzip stream must end cleanly (every
 * member's CRC and length checked); sha256 is of the compressed bytes.
 * Errors are one sentence that never names the path; `line` says where. */
struct snap_reader {
    int fd;
    void *zs;                        /* z_stream */
    bool eof, in_member;
    void *md;                        /* EVP_MD_CTX */
    unsigned char *in;
    struct buf pending;              /* decompressed bytes not yet returned */
    size_t pos;
    uint64_t compressed, raw;
    uint64_t line;                   /* the line last read or being read (1: the header) */
    int version;                     /* from the header: SNAP_FORMAT_V1 or SNAP_FORMAT_V2 */
    json_t *hdr;                     /* line 1 */
    json_t *doc;                     /* the current entity line, when it was parsed */
    char *canon;                     /* its body's canonical text */
    char *revs_txt, *conf_txt;       /* a parsed v2 line's revs and conflicts as text */
    const char *cur_line;            /* the current line (in pending) */
    size_t cur_len;
    char fc[64], fi[130], frev[REV_MAX];   /* the names of a line read as text */
    bool defer_body;                 /* caller's choice: snap_reader_body checks bodies */
    bool body_pending;               /* the current line's body is not checked yet */
    char prev_c[64], prev_i[130];    /* the previous entity's key (order) */
};
/* 0; or, with err and the reader closed: -1 when the file cannot be
 * opened (SNAP_MISSING when it is not there; r->line 0) or line 1 cannot
 * be read (r->line 1), -2 when line 1 is not a header of a format this
 * build reads. */
int snap_reader_open(struct snap_reader *r, const char *path, char *err, size_t errlen);
/* The header's members, checked as `snapsync verify` checks them (space,
 * entity_counts, entity_total, created_at). 0, or -1 with err. */
int snap_reader_header(struct snap_reader *r, struct snap_header *h, char *err, size_t errlen);
/* The header's entity_counts (owned by the reader). */
json_t *snap_reader_counts(struct snap_reader *r);
/* 1 with the next entity in e, 0 at the clean end, -1 with err (without
 * the line number: r->line has it). */
int snap_reader_next(struct snap_reader *r, struct snap_entity *e, char *err, size_t errlen);
/* With r->defer_body set (after open), snap_reader_next leaves the body of
 * a line in the writer's own layout unchecked: a caller that finds it
 * byte-equal to a stored body (stored bodies are canonical) needs no more;
 * any other body must pass this before it is used or the file is called
 * valid: 0 (e->body is then what a restore writes; e may be refilled), or
 * -1 with err as snap_reader_next says it. */
int snap_reader_body(struct snap_reader *r, struct snap_entity *e, char *err, size_t errlen);
/* The compressed bytes' sha256; at the end, once. */
void snap_reader_sha256(struct snap_reader *r, char out[65]);
void snap_reader_close(struct snap_reader *r);

/* (collection, id) byte order, the order of a file's lines */
int snap_key_cmp(const char *c1, const char *i1, const char *c2, const char *i2);

/* ---- the blobs a file's entities name ("_blobs" in their bodies) ------- */
struct blob_set {
    char (*v)[65];
    size_t n, cap;
};
void blob_set_add(struct blob_set *s, json_t *body);
/* the same from a body's text (parsed only when it mentions "_blobs") */
void blob_set_add_text(struct blob_set *s, const char *body, size_t len);
/* Sorted, without repeats, as a JSON array into out; the set is freed. */
void blob_set_finish(struct blob_set *s, struct buf *out);

/* ---- the full check of a file ----------------------------------------------
 * Everything docs/snapshot-format.md calls valid: gzip, header, every line,
 * order, counts per collection; with the sha256 and the blobs it names. A
 * check can stop and go on later (the background check runs it in slices). */
struct snap_summary {
    char space[64], space_uid[27], instance_id[27];
    uint64_t server_version, entity_total, lines, raw_bytes, size_bytes;
    uint64_t created_at_ms;          /* the header's created_at */
    char sha256[65];
    char *counts_json;               /* the header's entity_counts (malloc'd; caller frees) */
    char *blobs_json;                /* the blobs its entities name: a sorted JSON array (malloc'd; caller frees) */
};
struct snap_check {
    struct snap_reader rd;
    bool opened, header_done;
    json_t *seen;                    /* entities per collection */
    struct blob_set blobs;
};
/* 0, or -1 with err (which never names the path). */
int snap_check_open(struct snap_check *c, const char *path, struct snap_summary *sum, char *err, size_t errlen);
/* Goes on for about budget_ns of work (0: to the end). Returns 1 when there
 * is more to do, 0 when the file is valid (sum complete: the caller frees
 * its counts_json and blobs_json), -1 when it is not (err). */
int snap_check_step(struct snap_check *c, uint64_t budget_ns, struct snap_summary *sum, char *err, size_t errlen);
void snap_check_close(struct snap_check *c);
/* The whole check in one go. 0 or -1 with err. */
int snap_verify_file(const char *path, struct snap_summary *sum, char *err, size_t errlen);

#endif
