/* err.h - the one error carrier: what a failure tells a client.
 *
 * Every layer that reports a failure that can reach a client (a read job,
 * a write op, a snapshot or restore step, a sync job, a parse) fills a
 * struct err; the HTTP layer answers it with http_send_err(), which writes
 * {"error": code, "message": msg, <extra>} with the status. status 0 means
 * no error. Plain data: any thread may fill its own.
 */
#ifndef SNAPSYNC_ERR_H
#define SNAPSYNC_ERR_H

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include "core/util.h"

struct err {
    int status;                      /* HTTP status; 0 = ok */
    char code[40];                   /* machine-readable: "not_found", "conflict", ... */
    char msg[240];                   /* one sentence for people */
    char extra[160];                 /* extra members, JSON without braces, or "" */
};

/* Sets status, code and the formatted message; extra is left as it is
 * (a failure sets its extra members first, then fails). Returns -1, so
 * `return err_set(e, ...);` reads as a failure. */
int err_set(struct err *e, int status, const char *code, const char *fmt, ...) PRINTF_LIKE(4, 5);
int err_vset(struct err *e, int status, const char *code, const char *fmt, va_list ap) PRINTF_LIKE(4, 0);
static inline void err_clear(struct err *e) { e->status = 0; e->code[0] = e->msg[0] = e->extra[0] = '\0'; }
static inline bool err_failed(const struct err *e) { return e->status != 0; }
/* Copies src into dst (a worker's result into the loop-owned state); a
 * failure set without a code is named "error". */
static inline void err_copy(struct err *dst, const struct err *src)
{
    *dst = *src;
    if (dst->status && !dst->code[0]) memcpy(dst->code, "error", sizeof "error");
}

#endif
