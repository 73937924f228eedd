/* pgzip.h - one gzip stream compressed on several threads (as pigz does).
 *
 * The input is cut into 128 KiB blocks; each is deflated on its own by a
 * compressor thread (raw deflate, primed with the last 32 KiB of the block
 * before it as the dictionary, ended with a sync flush so blocks join on a
 * byte boundary; the last one ends the stream), and the caller's thread
 * writes the compressed blocks in order with the gzip header and trailer
 * (CRC-32 combined from the blocks'). The output is one ordinary gzip
 * member that gunzip and zlib read. Memory: a fixed ring of blocks.
 *
 * Threads: pgz_* calls come from one producer thread (a threadpool job);
 * the compressor threads are private to the stream and are joined by
 * pgz_finish / pgz_abort.
 */
#ifndef SNAPSYNC_PGZIP_H
#define SNAPSYNC_PGZIP_H

#include <stddef.h>
#include <stdint.h>

struct pgz;

/* sink receives compressed bytes in order; returns 0 or an errno. */
typedef int (*pgz_sink)(void *arg, const unsigned char *data, size_t len);

struct pgz *pgz_new(int level, int threads, pgz_sink sink, void *arg);
/* Returns 0 or the sink's errno (the stream is then unusable). */
int pgz_write(struct pgz *z, const void *data, size_t len);
/* Flushes, writes the trailer, joins the threads, frees. 0 or errno. */
int pgz_finish(struct pgz *z);
/* Stops without finishing (after an error), joins, frees. */
void pgz_abort(struct pgz *z);

#endif
