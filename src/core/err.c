/* err.c - see err.h. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>

int err_vset(struct err *e, int status, const char *code, const char *fmt, va_list ap)
{
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return -1;
}

int err_set(struct err *e, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, status, code, fmt, ap);
    va_end(ap);
    return -1;
}
