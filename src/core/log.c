/* log.c - see log.h. The batch buffer belongs to the loop thread. */
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static struct buf batch;
static uv_prepare_t flusher;
static bool attached;
static pthread_t loop_thread;

static const char *level_names[] = {"debug", "info", "warn", "error", "fatal"};

void log_set_level(enum log_level lvl) { min_level = lvl; }

/* stderr gone: nothing sane to do with the error */
static void write_all(const char *p, size_t n) { (void)write_full(2, p, n); }

void log_flush(void)
{
    if (batch.len) write_all(batch.data, batch.len);
    buf_reset(&batch);
    if (batch.cap > (1u << 20)) buf_free(&batch);
}

static void on_prepare(uv_prepare_t *h)
{
    UNUSED(h);
    log_flush();
}

void log_attach_loop(uv_loop_t *loop)
{
    if (attached) return;
    loop_thread = pthread_self();
    uv_prepare_init(loop, &flusher);
    uv_prepare_start(&flusher, on_prepare);
    uv_unref((uv_handle_t *)&flusher);
    attached = true;
}

void log_detach_loop(void)
{
    if (!attached) return;
    log_flush();
    uv_prepare_stop(&flusher);
    uv_close((uv_handle_t *)&flusher, NULL);
    attached = false;
    buf_free(&batch);
}

static void emit(enum log_level lvl, const char *msg, const char *fields, size_t flen)
{
    char ts[32];
    fmt_time_ms(ts, now_ms_wall());
    bool on_loop = attached && pthread_equal(pthread_self(), loop_thread);
    struct buf local, *b = on_loop ? &batch : &local;
    if (!on_loop) buf_init(&local);
    buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"", ts, level_names[lvl], msg);
    if (flen) {
        buf_putc(b, ',');
        buf_append(b, fields, flen);
    }
    buf_append(b, "}\n", 2);
    if (!on_loop) {
        write_all(local.data, local.len);
        buf_free(&local);
    } else if (batch.len > (64u << 10) || lvl >= LOG_ERROR) {
        log_flush();
    }
}

void log_raw(enum log_level lvl, const char *msg, const char *fields, size_t len)
{
    if (lvl < min_level) return;
    emit(lvl, msg, fields, len);
}

void log_msg(enum log_level lvl, const char *msg, const char *fields, ...)
{
    if (lvl < min_level) return;
    struct buf f;
    buf_init(&f);
    if (fields) {
        va_list ap;
        va_start(ap, fields);
        buf_vprintf(&f, fields, ap);
        va_end(ap);
    }
    emit(lvl, msg, f.data, f.len);
    buf_free(&f);
}
