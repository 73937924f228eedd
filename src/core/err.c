/* err.c - see err.h. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>

int err_set(struct err *e, int status, const char *code, const char *fmt, ...)
{
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->extra[0] = '\0';
    return -1;
}
