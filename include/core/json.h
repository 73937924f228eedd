/* json.h - writing JSON into a struct buf, and parsing client JSON.
 *
 * Responses are written directly as text (no DOM) so a handler appends what
 * it knows in one pass; client bodies are parsed with jansson, with depth and
 * shape checks and an error message that says where the input went wrong.
 */
#ifndef SNAPSYNC_JSON_H
#define SNAPSYNC_JSON_H

#include <jansson.h>
#include "core/util.h"

/* How deep an entity body may nest: 64 levels counted in the body itself
 * (the body object is level 1), whichever route it comes by -- a PUT, a
 * push item, a /replicate entity or conflict record, a pulled page, a merge
 * body -- so what one route or instance stores, every other takes. Control
 * bodies (keys, sync, ...) are held to it too. */
#define JSON_MAX_DEPTH 64
/* A request that carries bodies inside it (a push, /replicate, a sync page,
 * a merge) may nest that deep as a whole: past what any item can be (its
 * bodies sit at most 6 levels in), so an item with a body too deep is that
 * item's error (too_deep) and the others apply, while a text nested further
 * is refused whole (400 too_deep) by a scan before it is parsed. */
#define JSON_REQUEST_MAX_DEPTH 128

/* Appends s as a JSON string literal (quotes included). Invalid UTF-8 bytes
 * are replaced by U+FFFD so the output is always valid JSON. */
void json_str(struct buf *b, const char *s, size_t len);
static inline void json_cstr(struct buf *b, const char *s) { json_str(b, s, strlen(s)); }
/* Appends "key": (with a leading comma unless b ends with '{' or '['). */
void json_key(struct buf *b, const char *key);
void json_kv_str(struct buf *b, const char *key, const char *s);
void json_kv_strn(struct buf *b, const char *key, const char *s, size_t len);
void json_kv_u64(struct buf *b, const char *key, uint64_t v);
void json_kv_i64(struct buf *b, const char *key, int64_t v);
void json_kv_bool(struct buf *b, const char *key, bool v);
void json_kv_null(struct buf *b, const char *key);
void json_kv_time(struct buf *b, const char *key, uint64_t ms_epoch);  /* 0 -> null */
/* Appends a comma if b's last byte is not '{', '[' or ':' (list items). */
void json_sep(struct buf *b);

/* Parse failure details for a 400 body. */
struct json_err {
    char code[32];      /* "invalid_json", "too_deep", "not_an_object", "unknown_member" */
    char message[200];
    char member[64];    /* unknown_member: the member's name (truncated), for a "member" detail; else "" */
};

/* Parses text (len bytes) into a new reference; on failure returns NULL and
 * fills err. Rejects nesting deeper than JSON_MAX_DEPTH and, when
 * want_object, anything but an object at the top. */
json_t *json_parse(const char *text, size_t len, bool want_object, struct json_err *err);
/* The same with another nesting limit (max_depth levels for the whole text). */
json_t *json_parse_depth(const char *text, size_t len, bool want_object, int max_depth, struct json_err *err);

/* The scan json_parse runs before parsing, on its own: is text nested deeper
 * than max_depth (strings skipped)? Fills err (too_deep, with the byte) and
 * returns true if so. O(len), no allocation, any thread. */
bool json_too_deep(const char *text, size_t len, int max_depth, struct json_err *err);

/* Names from JSON: a string read with json_string_value stops at an
 * embedded NUL ("a\u0000evil" reads as "a"), so a value that becomes a name
 * (space, collection, id, rev, hash, peer, key name, option...) is read with
 * this instead: the string, or NULL when v is not a string or holds a NUL. */
static inline const char *json_name(const json_t *v)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == json_string_length(v) ? s : NULL;
}
/* The first string in v, at any depth, that holds a NUL (its path, like
 * "spaces[1]", written into path), skipping the top-level members that
 * skip (NULL-terminated, or NULL) lists -- entity bodies, whose values may
 * hold one. Returns true if there is one. */
bool json_find_nul(const json_t *v, const char *const *skip, char *path, size_t cap);

/* Request bodies with defined members: each route declares the members it
 * takes once, as a NULL-terminated list, and a member not in it is refused
 * (400 unknown_member) rather than ignored, so a misspelt option ("forse")
 * is never silently dropped. Entity bodies are user data: never checked. */
bool json_member_known(const char *key, const char *const *allowed);
/* The first member of obj (an object) that allowed does not list, or NULL. */
const char *json_unknown_member(const json_t *obj, const char *const *allowed);
/* Fills err for an unknown member: code unknown_member, err->member, and a
 * message naming it, where it was ("the request body", "change 3") and
 * what is allowed there. */
void json_unknown_member_err(struct json_err *err, const char *where, const char *member,
                             const char *const *allowed);

/* Nesting of a parsed value as the parse limits count it: objects and
 * arrays inside each other (1 for {} or {"a":1}), 0 for a scalar. */
int json_depth(const json_t *v);

#endif
