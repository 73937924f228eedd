/* pgzip.c - see pgzip.h. */
#include "core/pgzip.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

#include "core/util.h"

#define PGZ_BLOCK (128 * 1024)
#define PGZ_DICT (32 * 1024)
#define PGZ_RING 8
#define PGZ_MAX_THREADS 8

enum bstate { B_FREE, B_FILLED, B_WORKING, B_DONE };

struct block {
    enum bstate state;
    unsigned char *in;               /* dict (up to 32 KiB) then the input */
    size_t dict_len, in_len;
    bool last;
    unsigned char *out;
    size_t out_len, out_cap;
    uLong crc;
    int err;
};

struct pgz {
    int level, nthreads;
    pgz_sink sink;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    struct block ring[PGZ_RING];
    uint64_t fill_seq, write_seq;    /* blocks handed out / written */
    bool stop;
    pthread_t th[PGZ_MAX_THREADS];
    /* producer side */
    struct block *cur;               /* the block being filled */
    unsigned char prev_tail[PGZ_DICT];
    size_t prev_tail_len;
    uLong crc;
    uint64_t total_in;
    int err;
};

static int compress_block(struct block *b, int level)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return ENOMEM;
    if (b->dict_len) deflateSetDictionary(&zs, b->in, (uInt)b->dict_len);
    size_t need = deflateBound(&zs, b->in_len) + 64;
    if (b->out_cap < need) {
        b->out = xrealloc(b->out, need);
        b->out_cap = need;
    }
    zs.next_in = b->in + b->dict_len;
    zs.avail_in = (uInt)b->in_len;
    zs.next_out = b->out;
    zs.avail_out = (uInt)b->out_cap;
    int rc = deflate(&zs, b->last ? Z_FINISH : Z_SYNC_FLUSH);
    b->out_len = b->out_cap - zs.avail_out;
    deflateEnd(&zs);
    if (rc != Z_OK && rc != Z_STREAM_END) return EIO;
    if (b->last && rc != Z_STREAM_END) return EIO;
    b->crc = crc32(0L, b->in + b->dict_len, (uInt)b->in_len);
    return 0;
}

static void *worker(void *arg)
{
    struct pgz *z = arg;
    /* compression yields to the writer and the loop on a busy machine */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 5);
    pthread_mutex_lock(&z->mu);
    for (;;) {
        struct block *b = NULL;
        for (int i = 0; i < PGZ_RING; i++)
            if (z->ring[i].state == B_FILLED) { b = &z->ring[i]; break; }
        if (!b) {
            if (z->stop) break;
            pthread_cond_wait(&z->work, &z->mu);
            continue;
        }
        b->state = B_WORKING;
        pthread_mutex_unlock(&z->mu);
        int err = compress_block(b, z->level);
        pthread_mutex_lock(&z->mu);
        b->err = err;
        b->state = B_DONE;
        pthread_cond_broadcast(&z->done);
    }
    pthread_mutex_unlock(&z->mu);
    return NULL;
}

struct pgz *pgz_new(int level, int threads, pgz_sink sink, void *arg)
{
    struct pgz *z = xcalloc(1, sizeof *z);
    z->level = level;
    z->nthreads = threads < 1 ? 1 : threads > PGZ_MAX_THREADS ? PGZ_MAX_THREADS : threads;
    z->sink = sink;
    z->arg = arg;
    z->crc = crc32(0L, Z_NULL, 0);
    pthread_mutex_init(&z->mu, NULL);
    pthread_cond_init(&z->work, NULL);
    pthread_cond_init(&z->done, NULL);
    for (int i = 0; i < PGZ_RING; i++) z->ring[i].in = xmalloc(PGZ_DICT + PGZ_BLOCK);
    for (int i = 0; i < z->nthreads; i++)
        if (pthread_create(&z->th[i], NULL, worker, z) != 0) abort();
    static const unsigned char hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    z->err = sink(arg, hdr, sizeof hdr);
    return z;
}

/* Writes every finished block at the head of the order. Holds z->mu. */
static int drain(struct pgz *z, bool wait_all)
{
    while (z->write_seq < z->fill_seq) {
        struct block *b = &z->ring[z->write_seq % PGZ_RING];
        if (b->state != B_DONE) {
            if (!wait_all && z->fill_seq - z->write_seq < PGZ_RING) return 0;
            pthread_cond_wait(&z->done, &z->mu);
            continue;
        }
        if (b->err && !z->err) z->err = b->err;
        pthread_mutex_unlock(&z->mu);
        if (!z->err) {
            int e = z->sink(z->arg, b->out, b->out_len);
            if (e) z->err = e;
            z->crc = crc32_combine(z->crc, b->crc, (z_off_t)b->in_len);
        }
        pthread_mutex_lock(&z->mu);
        b->state = B_FREE;
        z->write_seq++;
    }
    return z->err;
}

/* Hands the current block to the compressors. */
static int submit(struct pgz *z, bool last)
{
    struct block *b = z->cur;
    b->last = last;
    /* the tail of this block primes the next one */
    size_t tl = b->in_len < PGZ_DICT ? b->in_len : PGZ_DICT;
    if (b->in_len >= PGZ_DICT || !b->in_len) {
        memcpy(z->prev_tail, b->in + b->dict_len + b->in_len - tl, tl);
        z->prev_tail_len = tl;
    } else {                         /* short block: keep older bytes too */
        size_t keep = PGZ_DICT - tl < z->prev_tail_len ? PGZ_DICT - tl : z->prev_tail_len;
        memmove(z->prev_tail, z->prev_tail + z->prev_tail_len - keep, keep);
        memcpy(z->prev_tail + keep, b->in + b->dict_len, tl);
        z->prev_tail_len = keep + tl;
    }
    pthread_mutex_lock(&z->mu);
    b->state = B_FILLED;
    z->fill_seq++;
    pthread_cond_signal(&z->work);
    int err = drain(z, false);
    pthread_mutex_unlock(&z->mu);
    z->cur = NULL;
    return err;
}

static void take_block(struct pgz *z)
{
    pthread_mutex_lock(&z->mu);
    struct block *b = &z->ring[z->fill_seq % PGZ_RING];
    while (b->state != B_FREE) pthread_cond_wait(&z->done, &z->mu);
    pthread_mutex_unlock(&z->mu);
    memcpy(b->in, z->prev_tail, z->prev_tail_len);
    b->dict_len = z->prev_tail_len;
    b->in_len = 0;
    b->err = 0;
    z->cur = b;
}

int pgz_write(struct pgz *z, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0 && !z->err) {
        if (!z->cur) take_block(z);
        struct block *b = z->cur;
        size_t room = PGZ_BLOCK - b->in_len;
        size_t n = len < room ? len : room;
        memcpy(b->in + b->dict_len + b->in_len, p, n);
        b->in_len += n;
        z->total_in += n;
        p += n;
        len -= n;
        if (b->in_len == PGZ_BLOCK) submit(z, false);
    }
    return z->err;
}

static void stop_threads(struct pgz *z)
{
    pthread_mutex_lock(&z->mu);
    z->stop = true;
    pthread_cond_broadcast(&z->work);
    pthread_mutex_unlock(&z->mu);
    for (int i = 0; i < z->nthreads; i++) pthread_join(z->th[i], NULL);
    for (int i = 0; i < PGZ_RING; i++) {
        free(z->ring[i].in);
        free(z->ring[i].out);
    }
    pthread_mutex_destroy(&z->mu);
    pthread_cond_destroy(&z->work);
    pthread_cond_destroy(&z->done);
}

int pgz_finish(struct pgz *z)
{
    if (!z->err) {
        if (!z->cur) take_block(z);
        submit(z, true);
        pthread_mutex_lock(&z->mu);
        drain(z, true);
        pthread_mutex_unlock(&z->mu);
    }
    if (!z->err) {
        unsigned char tr[8];
        uint32_t c = (uint32_t)z->crc, n = (uint32_t)z->total_in;
        for (int i = 0; i < 4; i++) { tr[i] = (unsigned char)(c >> (8 * i)); tr[4 + i] = (unsigned char)(n >> (8 * i)); }
        z->err = z->sink(z->arg, tr, sizeof tr);
    }
    int err = z->err;
    stop_threads(z);
    free(z);
    return err;
}

void pgz_abort(struct pgz *z)
{
    if (!z) return;
    pthread_mutex_lock(&z->mu);
    /* let running blocks finish; nothing more is written */
    while (1) {
        bool busy = false;
        for (int i = 0; i < PGZ_RING; i++)
            if (z->ring[i].state == B_FILLED || z->ring[i].state == B_WORKING) busy = true;
        if (!busy) break;
        pthread_cond_wait(&z->done, &z->mu);
    }
    pthread_mutex_unlock(&z->mu);
    stop_threads(z);
    free(z);
}
