/* log.h - JSON-lines logger on stderr.
 *
 * One object per line: {"ts":"…","level":"info","msg":"…",<fields>}. On the
 * loop thread lines are gathered in a buffer that is written with one
 * write(2) right before the loop polls again (uv_prepare), so a busy server
 * writes its access log in batches; off the loop thread (startup, CLI, the
 * rare worker) each line is written at once. Never log tokens or bodies.
 */
#ifndef SNAPSYNC_LOG_H
#define SNAPSYNC_LOG_H

#include <uv.h>
#include "core/util.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

void log_set_level(enum log_level lvl);
/* Batches loop-thread lines from now on; call from the loop thread. */
void log_attach_loop(uv_loop_t *loop);
void log_detach_loop(void);
void log_flush(void);

/* fields: printf format of extra members, already JSON, without a leading
 * comma ("\"space\":\"%s\""), or NULL. Strings from clients must go through
 * json_str (json.h) before they reach a log line. */
void log_msg(enum log_level lvl, const char *msg, const char *fields, ...) PRINTF_LIKE(3, 4);
/* Appends a finished line (fields already JSON, no braces) at level. */
void log_raw(enum log_level lvl, const char *msg, const char *fields, size_t len);

#define log_info(msg, ...) log_msg(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_msg(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_msg(LOG_ERROR, msg, __VA_ARGS__)

#endif
