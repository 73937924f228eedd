/* filestream.h - a file (or part of it) streamed as a response body: reads
 * of 64 KiB on the threadpool, optionally inflated there (gzip), written
 * with backpressure (the next read waits until less than 256 KiB is queued
 * on the socket). Memory stays flat whatever the file's size.
 * Loop thread; the descriptor is owned by the stream from then on. */
#ifndef SNAPSYNC_FILESTREAM_H
#define SNAPSYNC_FILESTREAM_H

#include <stdbool.h>
#include <stdint.h>

struct http_req;

/* Starts the response: status and headers already added by the caller.
 * length < 0: chunked (needed with inflate); else Content-Length = length
 * and exactly that many bytes from offset are sent. */
void filestream_start(struct http_req *r, int fd, int status, const char *ctype, uint64_t offset, int64_t length,
                      bool inflate);

#endif
