/* filestream.h - a file (or part of it) streamed as a response body: reads
 * of 64 KiB on the threadpool, optionally inflated there (gzip), written
 * with backpressure (the next read waits until less than 256 KiB is queued
 * on the socket). Memory stays flat whatever the file's size.
 * Loop thread; the descriptor is owned by the stream from then on.
 *
 * A stream that cannot be completed (a read error, gzip data that does not
 * inflate, a file shorter than it should be, or a failed check below) is
 * aborted: the connection is closed before the body's end (no last chunk;
 * fewer bytes than Content-Length), so the client sees an error instead of
 * a clean end, and the failure is logged. */
#ifndef SNAPSYNC_FILESTREAM_H
#define SNAPSYNC_FILESTREAM_H

#include <stdbool.h>
#include <stdint.h>

struct http_req;
struct server;

/* Checks of a whole file as it is streamed (a snapshot file): its size at
 * the first read, its sha256 before the last bytes go out, and, when
 * inflating, that the gzip stream ends exactly at the end of the file.
 * damaged() runs once on the loop thread when the file fails one of them
 * (or a read fails or the gzip data is corrupt), whether or not the client
 * is still there; why never names a server path. arg is owned by the
 * stream from then on and released with free() when it ends. */
struct filestream_check {
    uint64_t size;
    char sha256[65];                 /* hex */
    void (*damaged)(struct server *srv, void *arg, const char *why);
    void *arg;
};

/* Starts the response: status and headers already added by the caller.
 * length < 0: chunked (needed with inflate); else Content-Length = length
 * and exactly that many bytes from offset are sent. check: NULL (none), or
 * copied (a whole file from offset 0). */
void filestream_start(struct http_req *r, int fd, int status, const char *ctype, uint64_t offset, int64_t length,
                      bool inflate, const struct filestream_check *check);

#endif
