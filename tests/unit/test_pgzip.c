/* Unit tests: pgzip.c - the parallel gzip stream decompresses to exactly
 * the input, for sizes around block boundaries, 1 to 4 threads, levels. */
#include <zlib.h>

#include "test.h"
#include "core/pgzip.h"
#include "core/util.h"

static int sink(void *arg, const unsigned char *d, size_t n)
{
    buf_append(arg, d, n);
    return 0;
}

static int fail_sink(void *arg, const unsigned char *d, size_t n)
{
    (void)d;
    size_t *left = arg;
    if (n > *left) return 28;        /* ENOSPC */
    *left -= n;
    return 0;
}

static int gunzip_all(const struct buf *gz, struct buf *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 16) != Z_OK) return -1;
    zs.next_in = (Bytef *)gz->data;
    zs.avail_in = (uInt)gz->len;
    int rc;
    do {
        buf_reserve(out, 65536);
        zs.next_out = (Bytef *)out->data + out->len;
        zs.avail_out = 65536;
        rc = inflate(&zs, Z_NO_FLUSH);
        out->len += 65536 - zs.avail_out;
    } while (rc == Z_OK);
    inflateEnd(&zs);
    return rc == Z_STREAM_END && zs.avail_in == 0 ? 0 : -1;
}

int main(void)
{
    size_t sizes[] = {0, 1, 1000, 131071, 131072, 131073, 262144 + 77, 1500000};
    uint64_t x = 12345;
    for (size_t si = 0; si < ARRAY_SIZE(sizes); si++) {
        size_t n = sizes[si];
        unsigned char *in = xmalloc(n + 1);
        /* compressible but not trivial: JSON-ish lines with noise */
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            in[i] = (i % 97 == 96) ? '\n' : (unsigned char)("{\"id\":\"abcdefgh\",\"n\":0123456789}"[x % 30]);
        }
        for (int th = 1; th <= 4; th++) {
            struct buf gz, out;
            buf_init(&gz);
            buf_init(&out);
            struct pgz *z = pgz_new(th == 3 ? 1 : 6, th, sink, &gz);
            /* feed in uneven pieces */
            size_t off = 0, step = 1;
            while (off < n) {
                size_t k = MIN(step, n - off);
                CHECK_INT(pgz_write(z, in + off, k), 0);
                off += k;
                step = step * 3 + 7;
            }
            CHECK_INT(pgz_finish(z), 0);
            CHECK_INT(gunzip_all(&gz, &out), 0);
            CHECK_INT(out.len, n);
            CHECK(n == 0 || memcmp(out.data, in, n) == 0);
            if (n == 1500000) {
                /* priming each block with the previous 32 KiB keeps the
                 * ratio within a few percent of one single stream */
                uLongf one = compressBound((uLong)n);
                unsigned char *tmp = xmalloc(one);
                compress2(tmp, &one, in, (uLong)n, th == 3 ? 1 : 6);
                free(tmp);
                CHECK(gz.len < one + one / 50 + 64);
            }
            buf_free(&gz);
            buf_free(&out);
        }
        free(in);
    }
    /* a sink error stops the stream and is reported */
    size_t left = 5000;
    struct pgz *z = pgz_new(6, 2, fail_sink, &left);
    unsigned char junk[300000];
    for (size_t i = 0; i < sizeof junk; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; junk[i] = (unsigned char)x; }
    int err = pgz_write(z, junk, sizeof junk);
    if (!err) err = pgz_finish(z);
    else pgz_abort(z);
    CHECK_INT(err, 28);
    TEST_MAIN_END();
}
