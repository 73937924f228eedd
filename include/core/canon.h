/* canon.h - canonical JSON text (sorted keys, minified), byte-identical to
 * jansson's JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17) dump,
 * without building a jansson DOM. See canon.c. */
#ifndef SNAPSYNC_CANON_H
#define SNAPSYNC_CANON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

#define CANON_MAX_DEPTH JSON_MAX_DEPTH

/* Returns malloc'd canonical text (*out_len bytes, NUL-terminated), or NULL
 * with err filled (codes: invalid_json, too_deep, not_an_object). */
char *json_canonical(const char *in, size_t len, bool want_object, size_t *out_len, struct json_err *err);

/* A parsed text kept as flat nodes (one array, one string buffer; the input
 * is not referenced afterwards), for readers that want a few members and the
 * canonical text of others -- a sync page: its scalars read in place, each
 * entity body written canonical straight from the one parse. Nodes are
 * numbered from 0 (the root); CANON_NONE is "no such node", and every
 * accessor accepts it. Any thread; a doc belongs to one thread at a time. */
struct canon_doc;
#define CANON_NONE UINT32_MAX

enum canon_type {
    CANON_ABSENT, CANON_NULL, CANON_TRUE, CANON_FALSE, CANON_INT, CANON_REAL, CANON_STR, CANON_ARR, CANON_OBJ
};

/* Parses in (the same grammar and checks as json_canonical: duplicate keys,
 * invalid UTF-8, integers beyond int64 and nesting beyond max_depth fail).
 * Returns the doc, or NULL with err filled. */
struct canon_doc *canon_parse(const char *in, size_t len, int max_depth, struct json_err *err);
void canon_doc_free(struct canon_doc *d);
enum canon_type canon_type(const struct canon_doc *d, uint32_t n);
/* The value of member key of object obj, or CANON_NONE. */
uint32_t canon_member(const struct canon_doc *d, uint32_t obj, const char *key);
/* Arrays: the first element, and the element after elem (CANON_NONE at the end). */
uint32_t canon_first(const struct canon_doc *d, uint32_t arr);
uint32_t canon_next(const struct canon_doc *d, uint32_t elem);
/* Elements of an array, members of an object, else 0. */
size_t canon_count(const struct canon_doc *d, uint32_t n);
/* A string's decoded bytes (NUL-terminated; *len may show inner NULs), or NULL. */
const char *canon_str(const struct canon_doc *d, uint32_t n, size_t *len);
/* The same for a string that becomes a name (collection, id, rev, hash...):
 * NULL too when it holds a NUL, so "a\u0000evil" is never read as "a". */
const char *canon_name(const struct canon_doc *d, uint32_t n, size_t *len);
/* Nesting of node n as the parse limits count it: containers inside each
 * other (1 for {} or {"a":1}, 2 for {"a":[1]}), 0 for a scalar or
 * CANON_NONE. A body's depth is canon_depth(body) <= JSON_MAX_DEPTH. */
int canon_depth(const struct canon_doc *d, uint32_t n);
/* The first key of object obj that allowed (NULL-terminated) does not list,
 * or NULL (json.h json_unknown_member, for a canon doc). */
const char *canon_unknown_member(const struct canon_doc *d, uint32_t obj, const char *const *allowed);
bool canon_int(const struct canon_doc *d, uint32_t n, int64_t *out);
/* Appends the canonical text of node n (what json_canonical gives for it). */
void canon_emit(const struct canon_doc *d, uint32_t n, struct buf *out);

/* The same parse, one member of a top-level object at a time, and one
 * element at a time of an array member: memory for one value, not for the
 * whole text (a sync page of 1,000 entities holds one entity's nodes at a
 * time). Checks are those of canon_parse (duplicate keys at the top too);
 * max_depth counts from the top object (1), and a text nested deeper is
 * refused by canon_stream_open itself (a scan before any parse: too_deep).
 * Any error (-1 or NULL) leaves err filled; only canon_stream_close may
 * follow then.
 *
 *   cs = canon_stream_open(text, len, depth, &err);   NULL: not an object
 *   while ((rc = canon_stream_member(cs, &key, &klen)) == 1) {
 *       if (interesting array && canon_stream_array(cs) == 1)
 *           while ((rc = canon_stream_element(cs)) == 1) d = canon_stream_value(cs);
 *       else d = canon_stream_value(cs);       every value must be read
 *   }
 *   rc == 0: the whole text was read and is valid */
struct canon_stream;
struct canon_stream *canon_stream_open(const char *in, size_t len, int max_depth, struct json_err *err);
void canon_stream_close(struct canon_stream *cs);
/* 1 and the next member's key (valid until the stream closes), 0 at the end
 * of the object (and of the text), -1 on error. */
int canon_stream_member(struct canon_stream *cs, const char **key, size_t *klen);
/* Enters the member's value if it is an array: 1, else 0 (read it with
 * canon_stream_value), -1 on error. */
int canon_stream_array(struct canon_stream *cs);
/* In an array: 1 when there is a next element (read it with
 * canon_stream_value), 0 at its end, -1 on error. */
int canon_stream_element(struct canon_stream *cs);
/* Parses the member's value or the current element: a doc whose node 0 is
 * that value, valid until the next call, or NULL on error. */
const struct canon_doc *canon_stream_value(struct canon_stream *cs);

#endif
