/* canon.h - canonical JSON text (sorted keys, minified), byte-identical to
 * jansson's JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17) dump,
 * without building a jansson DOM. See canon.c. */
#ifndef SNAPSYNC_CANON_H
#define SNAPSYNC_CANON_H

#include <stdbool.h>
#include <stddef.h>

#include "json.h"

#define CANON_MAX_DEPTH JSON_MAX_DEPTH

/* Returns malloc'd canonical text (*out_len bytes, NUL-terminated), or NULL
 * with err filled (codes: invalid_json, too_deep, not_an_object). */
char *json_canonical(const char *in, size_t len, bool want_object, size_t *out_len, struct json_err *err);

#endif
