/* fuzz_snapshot.c - the snapshot readers: snap_verify_file (the format's
 * full check, snapshot_format.h, that every verify, import and restore
 * runs) and the restore's merge (merge_run in restore.c over the format's
 * reader, through snap_merge_count, against an in-memory
 * SQLite database with an `entities` table). The first input byte picks the
 * mode: even, the rest is NDJSON that the target gzips (bit 1: in two gzip
 * members, cut at the middle); odd, the rest is the file's bytes as they
 * are (raw gzip). Aborts if a file verify accepts lacks a header, has
 * counts that do not match its lines, or is refused by the plan reader (or
 * planned with other counts); and if the plan reader accepts a file verify
 * refuses for anything the plan reader also reads (gzip, lines, order). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>
#include <zlib.h>

#include "core/names.h"
#include "svc/restore.h"
#include "svc/snapshot_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64];
static sqlite3 *db;

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_snapshot: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

static void setup(void)
{
    if (db) return;
    snprintf(path, sizeof path, "/tmp/fuzz_snapshot.%d.ndjson.gz", (int)getpid());
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) fail("sqlite3_open", NULL);
    /* space 1 holds a few live rows (the walk deletes and modifies), space
     * 2 is empty (every entity is a put) */
    const char *sql = "CREATE TABLE entities(space_id INTEGER, collection TEXT, id TEXT, rev TEXT, deleted INTEGER,"
                      " body TEXT, revs TEXT);"
                      "INSERT INTO entities VALUES(1,'a','1','1-ab',0,'{}',''),(1,'notes','n1','1-ab',0,'{\"n\":1}',''),"
                      "(1,'notes','n2','2-cd',1,NULL,'1-aa'),(1,'zz','z','1-ef',0,'{\"z\":[]}','');";
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) fail("schema", sqlite3_errmsg(db));
}

/* gzip of in[0..len) into one or two members */
static int write_gz(FILE *f, const uint8_t *in, size_t len, int level)
{
    unsigned char out[16384];
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    int rc;
    do {
        zs.next_out = out;
        zs.avail_out = sizeof out;
        rc = deflate(&zs, Z_FINISH);
        fwrite(out, 1, sizeof out - zs.avail_out, f);
    } while (rc == Z_OK || (rc == Z_BUF_ERROR && zs.avail_out == 0));
    deflateEnd(&zs);
    return rc == Z_STREAM_END ? 0 : -1;
}

/* verify refusals the plan reader does not repeat: it reads the header
 * line only for its format and counts nothing (a restore verifies first
 * and compares the sha256) */
static bool header_or_counts(const char *err)
{
    return !strncmp(err, "line 1 is not", 13) || !strncmp(err, "the header", 10);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    setup();
    uint8_t mode = data[0];
    const uint8_t *body = data + 1;
    size_t blen = size - 1;
    FILE *f = fopen(path, "wb");
    if (!f) fail("fopen", path);
    if (mode & 1) {
        fwrite(body, 1, blen, f);
    } else if (mode & 2) {
        if (write_gz(f, body, blen / 2, 1) < 0 || write_gz(f, body + blen / 2, blen - blen / 2, 6) < 0)
            fail("deflate", NULL);
    } else if (write_gz(f, body, blen, (mode >> 2) % 10) < 0) {
        fail("deflate", NULL);
    }
    if (fclose(f) != 0) fail("fclose", path);

    struct snap_summary sum;
    char verr[256] = "", merr[256] = "";
    int vrc = snap_verify_file(path, &sum, verr, sizeof verr);
    uint64_t puts = 0, dels = 0;
    if (vrc == 0) {
        if (!name_space_valid(sum.space, strlen(sum.space))) fail("verify accepted a header without a space", NULL);
        if (sum.lines != sum.entity_total + 1) fail("verify's line count is not entities + header", NULL);
        if (!sum.counts_json || !sum.blobs_json || strlen(sum.sha256) != 64) fail("verify's summary is incomplete", NULL);
        if (!(mode & 1)) {
            /* the NDJSON is the input: one '\n' per line, every byte read */
            uint64_t nl = 0;
            for (size_t i = 0; i < blen; i++) nl += body[i] == '\n';
            if (nl != sum.lines || sum.raw_bytes != blen) fail("verify's lines or bytes differ from the input", NULL);
        }
        /* the plan reader takes what verify takes, with the same sha256 */
        if (snap_merge_count(path, sum.sha256, db, 2, &puts, &dels, merr, sizeof merr) < 0)
            fail("the plan reader refuses a file verify accepts", merr);
        if (puts != sum.entity_total || dels != 0) fail("an empty space's plan is not one put per entity", NULL);
        if (snap_merge_count(path, sum.sha256, db, 1, &puts, &dels, merr, sizeof merr) < 0)
            fail("the plan reader refuses a file verify accepts (live rows)", merr);
        if (puts > sum.entity_total || dels > 3) fail("a plan with more changes than entities and rows", NULL);
        free(sum.counts_json);
        free(sum.blobs_json);
    } else {
        if (!verr[0]) fail("verify refused without a reason", NULL);
        int mrc = snap_merge_count(path, NULL, db, 1, &puts, &dels, merr, sizeof merr);
        if (mrc == 0 && !header_or_counts(verr)) fail("the plan reader accepts a file verify refuses", verr);
    }
    unlink(path);
    return 0;
}
