/* test_snapshot_format.c - the snapshot file format without a server: a
 * file written by the writer reads back through the reader (header, lines,
 * counts, sha256); a truncated file and a flipped byte are refused with a
 * clear reason; and a v1 file written by the server before the format had
 * its own module (tests/unit/fixtures/snapshot-v1.ndjson.gz, argv[1]) still
 * reads, line for line, to the same values. New files are v2: their lines
 * carry the revision history and conflict records, which read back as the
 * same text; malformed v2 lines are refused with a reason that names the
 * member. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/canon.h"
#include "core/json.h"
#include "core/util.h"
#include "svc/snapshot_format.h"
#include "test.h"

static char dir[256];

static void file_sha256(const char *path, char out[65])
{
    FILE *f = fopen(path, "rb");
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    unsigned char buf[4096];
    size_t n;
    while (f && (n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(md, buf, n);
    if (f) fclose(f);
    unsigned char d[32];
    unsigned int l = 32;
    EVP_DigestFinal_ex(md, d, &l);
    EVP_MD_CTX_free(md);
    hex_encode(out, d, 32);
}

/* body_len: set from body in main() */
static struct snap_entity ents[] = {
    {.collection = "issues", .id = "I1", .rev = "1-e24b788da9648c3e", .version = 2, .created_at = 1796309725946,
     .updated_at = 1796309725946, .body = "{\"a\":{\"k\":null},\"z\":[1,\"x\"]}", .body_len = 0,
     .revs = "[\"1-e24b788da9648c3e\"]", .conflicts = "[{\"rev\":\"1-0badc0ffee000000\",\"deleted\":false,\"body\":{\"k\":1}},"
     "{\"rev\":\"2-00000000000000aa\",\"deleted\":true,\"body\":null}]"},
    {.collection = "issues", .id = "I2", .rev = "1-39508574a6e01e3c", .version = 1, .created_at = 1796309725924,
     .updated_at = 1796309725924, .body = "{\"n\":2,\"title\":\"b\"}", .body_len = 0},
    {.collection = "notes", .id = "N1", .rev = "3-74780899ab8e4d39", .version = 5, .created_at = 1796309725982,
     .updated_at = 1796309726034, .body = "{\"text\":\"h\\u00e9llo\"}", .body_len = 0,
     .revs = "[\"3-74780899ab8e4d39\",\"2-1111111111111111\",\"1-2222222222222222\"]"},
};

/* writes the three entities above; fills the writer's summary */
static void write_file(const char *path, int level, int threads, struct snap_written *out)
{
    char tmp[300], err[200] = "";
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct snap_writer w;
    CHECK_INT(snap_writer_open(&w, tmp, level, threads, 0, err, sizeof err), 0);
    const char counts[] = "{\"issues\":2,\"notes\":1}";
    struct snap_header h = {.server_version = 5, .created_at_ms = 1796309726067, .entity_total = 3,
                            .counts_json = counts, .counts_len = sizeof counts - 1};
    snprintf(h.space, sizeof h.space, "fixture");
    snprintf(h.space_uid, sizeof h.space_uid, "01M8Y6ECPHN68FJ4G07QJQ9H1C");
    snprintf(h.instance_id, sizeof h.instance_id, "01M8Y6EBRXA722QNHVD461M9YR");
    snprintf(h.snapshot, sizeof h.snapshot, "01M8Y6ECVBF4WK19FYG1M298T3");
    snap_writer_header(&w, &h);
    for (size_t i = 0; i < sizeof ents / sizeof ents[0]; i++) {
        ents[i].revs_len = ents[i].revs ? strlen(ents[i].revs) : 0;
        ents[i].conflicts_len = ents[i].conflicts ? strlen(ents[i].conflicts) : 0;
        CHECK_INT(snap_writer_entity(&w, &ents[i], err, sizeof err), 0);
    }
    CHECK_INT(snap_writer_end(&w, err, sizeof err), 0);
    CHECK_INT(snap_writer_commit(&w, tmp, path, out, err, sizeof err), 0);
    snap_writer_close(&w, tmp, false);
    CHECK_STR(err, "");
    CHECK(access(tmp, F_OK) != 0);   /* renamed */
}

/* reads path back: the header, every line, the order, the sha256 */
static void read_back(const char *path, const char *want_sha, int version)
{
    struct snap_reader rd;
    char err[200] = "";
    CHECK_INT(snap_reader_open(&rd, path, err, sizeof err), 0);
    struct snap_header h;
    CHECK_INT(snap_reader_header(&rd, &h, err, sizeof err), 0);
    CHECK_INT(h.version, version);
    CHECK_STR(h.space, "fixture");
    CHECK_STR(h.space_uid, "01M8Y6ECPHN68FJ4G07QJQ9H1C");
    CHECK_INT(h.server_version, 5);
    CHECK_INT(h.entity_total, 3);
    const char *want_c[] = {"issues", "issues", "notes"}, *want_i[] = {"I1", "I2", "N1"};
    struct snap_entity e;
    int n = 0, r;
    while ((r = snap_reader_next(&rd, &e, err, sizeof err)) == 1) {
        CHECK(n < 3);
        if (n >= 3) break;
        CHECK_STR(e.collection, want_c[n]);
        CHECK_STR(e.id, want_i[n]);
        CHECK_INT(e.format_version, version);
        CHECK(e.body && e.body_len > 1 && e.body[0] == '{');
        if (version == SNAP_FORMAT_V1) {
            CHECK(e.revs == NULL && e.conflicts == NULL);
        } else {                     /* what was written, as text */
            const struct snap_entity *w = &ents[n];
            size_t cl;               /* the body as stored: canonical */
            struct json_err je;
            char *canon = json_canonical(w->body, w->body_len, true, &cl, &je);
            CHECK(canon && e.body_len == cl && !memcmp(e.body, canon, cl));
            free(canon);
            char want_revs[200];
            if (w->revs) snprintf(want_revs, sizeof want_revs, "%s", w->revs);
            else snprintf(want_revs, sizeof want_revs, "[\"%s\"]", w->rev);
            CHECK(e.revs && e.revs_len == strlen(want_revs) && !memcmp(e.revs, want_revs, e.revs_len));
            if (w->conflicts) CHECK(e.conflicts && e.conflicts_len == strlen(w->conflicts) &&
                                    !memcmp(e.conflicts, w->conflicts, e.conflicts_len));
            else CHECK(e.conflicts == NULL && e.conflicts_len == 0);
        }
        n++;
    }
    CHECK_INT(r, 0);
    CHECK_INT(n, 3);
    char sha[65];
    snap_reader_sha256(&rd, sha);
    if (want_sha) CHECK_STR(sha, want_sha);
    snap_reader_close(&rd);

    struct snap_summary sum;
    CHECK_INT(snap_verify_file(path, &sum, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK_INT(sum.lines, 4);
    CHECK_INT(sum.entity_total, 3);
    CHECK_STR(sum.counts_json, "{\"issues\":2,\"notes\":1}");
    CHECK_STR(sum.blobs_json, "[]");
    if (want_sha) CHECK_STR(sum.sha256, want_sha);
    free(sum.counts_json);
    free(sum.blobs_json);
}

static void test_write_read(void)
{
    int modes[][2] = {{6, 1}, {1, 4}, {0, 1}};           /* zlib, pgzip, stored */
    for (size_t m = 0; m < 3; m++) {
        char path[300];
        snprintf(path, sizeof path, "%s/w%zu.ndjson.gz", dir, m);
        struct snap_written out;
        write_file(path, modes[m][0], modes[m][1], &out);
        CHECK_INT(out.entities, 3);
        char sha[65];
        file_sha256(path, sha);
        CHECK_STR(out.sha256, sha);
        read_back(path, sha, SNAP_FORMAT_V2);
    }
}

/* the writer's lines are the v2 layout, byte for byte: the API's entity
 * shape, revs (rev alone when the entity has no history) and conflicts,
 * the body last */
static void test_lines(void)
{
    struct buf b;
    buf_init(&b);
    snap_line_entity(&b, &ents[1]);
    CHECK_STR(b.data, "{\"collection\":\"issues\",\"id\":\"I2\",\"rev\":\"1-39508574a6e01e3c\",\"version\":1,"
                      "\"created_at\":\"2026-12-03T14:55:25.924Z\",\"updated_at\":\"2026-12-03T14:55:25.924Z\","
                      "\"deleted\":false,\"revs\":[\"1-39508574a6e01e3c\"],\"conflicts\":[],"
                      "\"body\":{\"n\":2,\"title\":\"b\"}}\n");
    buf_free(&b);
}

/* A file of these raw lines (after a v2 header for one entity of "c"). */
static void raw_file(const char *path, const char *line)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"format\":\"snapsync.snapshot.v2\",\"space\":\"fixture\",\"space_uid\":\"01M8Y6ECPHN68FJ4G07QJQ9H1C\","
                 "\"server_version\":1,\"created_at\":\"2026-12-03T14:55:25.924Z\",\"instance_id\":\"01M8Y6EBRXA722QNHVD461M9YR\","
                 "\"entity_counts\":{\"c\":1},\"entity_total\":1,\"snapshot\":\"01M8Y6ECVBF4WK19FYG1M298T3\"}\n");
    buf_puts(&b, line);
    buf_putc(&b, '\n');
    FILE *f = fopen(path, "wb");
    struct snap_gz *g = snap_gz_new(fileno(f), 6, 1, 0, false);
    CHECK_INT(snap_gz_finish(g, b.data, b.len), 0);
    snap_gz_free(g);
    fclose(f);
    buf_free(&b);
}

#define V2_HEAD "{\"collection\":\"c\",\"id\":\"x\",\"rev\":\"2-aa\",\"version\":3,\"created_at\":\"2026-12-03T14:55:25.924Z\"," \
                "\"updated_at\":\"2026-12-03T14:55:25.924Z\",\"deleted\":false,"

/* v2 lines that are not in the writer's layout are read by the parse, with
 * the same result; malformed revs or conflicts are refused by name */
static void test_v2_lines(void)
{
    char path[300], err[300];
    snprintf(path, sizeof path, "%s/v2raw.ndjson.gz", dir);
    struct snap_summary sum;
    static const struct { const char *line, *want_err; } cases[] = {
        {V2_HEAD "\"revs\":[\"2-aa\",\"1-bb\"],\"conflicts\":[],\"body\":{\"a\":1}}", NULL},
        /* another member order, spaces, a body that is not canonical: parsed */
        {"{\"body\": {\"b\":1, \"a\":2}, \"revs\":[\"2-aa\"], \"collection\":\"c\",\"id\":\"x\",\"rev\":\"2-aa\"}", NULL},
        {V2_HEAD "\"body\":{\"a\":1}}", "\"revs\" is missing"},
        {V2_HEAD "\"revs\":[\"1-bb\",\"2-aa\"],\"conflicts\":[],\"body\":{\"a\":1}}", "\"revs\" is not"},
        {V2_HEAD "\"revs\":\"2-aa\",\"conflicts\":[],\"body\":{\"a\":1}}", "\"revs\" is not"},
        {V2_HEAD "\"revs\":[\"2-aa\",\"x\"],\"conflicts\":[],\"body\":{\"a\":1}}", "\"revs\" is not"},
        {V2_HEAD "\"revs\":[\"2-aa\"],\"conflicts\":[{\"rev\":\"1-bb\"}],\"body\":{\"a\":1}}", "\"conflicts\" is not"},
        {V2_HEAD "\"revs\":[\"2-aa\"],\"conflicts\":{},\"body\":{\"a\":1}}", "\"conflicts\" is not"},
        {V2_HEAD "\"revs\":[\"2-aa\"],\"conflicts\":[],\"body\":{\"a\":1,\"a\":2}}", "invalid JSON"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        raw_file(path, cases[k].line);
        err[0] = '\0';
        int rc = snap_verify_file(path, &sum, err, sizeof err);
        if (!cases[k].want_err) {
            CHECK_INT(rc, 0);
            CHECK_STR(err, "");
            free(sum.counts_json);
            free(sum.blobs_json);
        } else {
            CHECK_INT(rc, -1);
            CHECK(strstr(err, "line 2: ") == err);
            if (!strstr(err, cases[k].want_err)) fprintf(stderr, "case %zu: %s\n", k, err);
            CHECK(strstr(err, cases[k].want_err) != NULL);
        }
    }
    /* the parsed line: canonical body, revs as text */
    raw_file(path, cases[1].line);
    struct snap_reader rd;
    struct snap_entity e;
    CHECK_INT(snap_reader_open(&rd, path, err, sizeof err), 0);
    CHECK_INT(snap_reader_next(&rd, &e, err, sizeof err), 1);
    CHECK(e.body_len == 13 && !memcmp(e.body, "{\"a\":2,\"b\":1}", 13));
    CHECK(e.revs_len == 8 && !memcmp(e.revs, "[\"2-aa\"]", 8));
    CHECK(e.conflicts == NULL);
    snap_reader_close(&rd);
    /* a body in the writer's layout that is not canonical: with defer_body
     * it is left unchecked until snap_reader_body, which canonicalizes it */
    raw_file(path, V2_HEAD "\"revs\":[\"2-aa\"],\"conflicts\":[],\"body\":{\"b\":1,\"a\":2}}");
    CHECK_INT(snap_reader_open(&rd, path, err, sizeof err), 0);
    rd.defer_body = true;
    CHECK_INT(snap_reader_next(&rd, &e, err, sizeof err), 1);
    CHECK(e.body_len == 13 && !memcmp(e.body, "{\"b\":1,\"a\":2}", 13));
    CHECK_INT(snap_reader_body(&rd, &e, err, sizeof err), 0);
    CHECK(e.body_len == 13 && !memcmp(e.body, "{\"a\":2,\"b\":1}", 13));
    CHECK_STR(e.id, "x");
    CHECK_INT(snap_reader_next(&rd, &e, err, sizeof err), 0);
    snap_reader_close(&rd);
    /* ... and one that cannot be stored fails there */
    raw_file(path, V2_HEAD "\"revs\":[\"2-aa\"],\"conflicts\":[],\"body\":{\"a\":1,\"a\":2}}");
    CHECK_INT(snap_reader_open(&rd, path, err, sizeof err), 0);
    rd.defer_body = true;
    CHECK_INT(snap_reader_next(&rd, &e, err, sizeof err), 1);
    CHECK_INT(snap_reader_body(&rd, &e, err, sizeof err), -1);
    CHECK(strstr(err, "invalid JSON") != NULL);
    snap_reader_close(&rd);
}

static long file_bytes(const char *path, unsigned char **out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)n);
    if (fread(*out, 1, (size_t)n, f) != (size_t)n) n = -1;
    fclose(f);
    return n;
}

static void put_bytes(const char *path, const unsigned char *d, long n)
{
    FILE *f = fopen(path, "wb");
    fwrite(d, 1, (size_t)n, f);
    fclose(f);
}

static void test_damaged(void)
{
    char good[300], bad[300], err[200];
    snprintf(good, sizeof good, "%s/good.ndjson.gz", dir);
    snprintf(bad, sizeof bad, "%s/bad.ndjson.gz", dir);
    struct snap_written out;
    write_file(good, 6, 1, &out);
    unsigned char *d = NULL;
    long n = file_bytes(good, &d);
    CHECK(n > 40);
    struct snap_summary sum;

    put_bytes(bad, d, n * 6 / 10);                     /* truncated */
    CHECK_INT(snap_verify_file(bad, &sum, err, sizeof err), -1);
    CHECK(strstr(err, "truncated") != NULL);

    d[n / 2] ^= 0x20;                                   /* a flipped byte in the deflate data */
    put_bytes(bad, d, n);
    err[0] = '\0';
    CHECK_INT(snap_verify_file(bad, &sum, err, sizeof err), -1);
    CHECK(err[0] != '\0');
    d[n / 2] ^= 0x20;

    d[n - 6] ^= 0x01;                                   /* the gzip trailer's CRC */
    put_bytes(bad, d, n);
    CHECK_INT(snap_verify_file(bad, &sum, err, sizeof err), -1);
    CHECK(strstr(err, "gzip data is corrupt") != NULL);
    free(d);

    unlink(bad);
    CHECK_INT(snap_verify_file(bad, &sum, err, sizeof err), -1);
    CHECK_STR(err, SNAP_MISSING);
    struct snap_reader rd;
    CHECK_INT(snap_reader_open(&rd, bad, err, sizeof err), -1);
    CHECK_STR(err, SNAP_MISSING);
}

/* A v1 entity line, as the server wrote them before v2. */
static void v1_line(struct buf *b, const struct snap_entity *e)
{
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
    buf_puts(b, ",\"body\":");
    buf_append(b, e->body, e->body_len);
    buf_puts(b, "}\n");
}

/* a file as the server wrote it before this module: it reads, and its
 * entities written again in the v1 layout are the same bytes (the
 * header's line differs from v2's in its format only) */
static void test_v1_fixture(const char *path)
{
    read_back(path, "c89045ba9998596d08d9fdb94d110d9edc7226659f03a5837868b27820ec246d", SNAP_FORMAT_V1);
    struct snap_reader rd;
    char err[200];
    CHECK_INT(snap_reader_open(&rd, path, err, sizeof err), 0);
    struct snap_header h;
    CHECK_INT(snap_reader_header(&rd, &h, err, sizeof err), 0);
    char *counts = json_dumps(snap_reader_counts(&rd), JSON_COMPACT | JSON_PRESERVE_ORDER);
    h.counts_json = counts;
    h.counts_len = strlen(counts);
    struct snap_entity e;
    struct buf b, hl;
    buf_init(&b);
    buf_init(&hl);
    snap_line_header(&hl, &h);
    const char *v2 = strstr(hl.data, "snapshot.v2");
    CHECK(v2 != NULL);
    if (v2) {
        buf_append(&b, hl.data, (size_t)(v2 - hl.data));
        buf_puts(&b, "snapshot.v1");
        buf_puts(&b, v2 + strlen("snapshot.v2"));
    }
    while (snap_reader_next(&rd, &e, err, sizeof err) == 1) v1_line(&b, &e);
    snap_reader_close(&rd);
    free(counts);
    /* the fixture's raw lines */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
    FILE *p = popen(cmd, "r");
    struct buf raw;
    buf_init(&raw);
    char chunk[4096];
    size_t k;
    while (p && (k = fread(chunk, 1, sizeof chunk, p)) > 0) buf_append(&raw, chunk, k);
    if (p) pclose(p);
    CHECK_INT(b.len, raw.len);
    CHECK(b.len == raw.len && !memcmp(b.data, raw.data, b.len));
    buf_free(&b);
    buf_free(&hl);
    buf_free(&raw);
}

int main(int argc, char **argv)
{
    snprintf(dir, sizeof dir, "/tmp/test_snapshot_format.%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    if (system(cmd) != 0) return 1;
    for (size_t i = 0; i < sizeof ents / sizeof ents[0]; i++) ents[i].body_len = strlen(ents[i].body);
    test_lines();
    test_write_read();
    test_v2_lines();
    test_damaged();
    if (argc > 1) test_v1_fixture(argv[1]);
    else CHECK(!"the v1 fixture's path is argv[1]");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    TEST_MAIN_END();
}
