/* names.h - the name rules (docs/api.md, Conventions), checked before any handler runs. */
#ifndef SNAPSYNC_NAMES_H
#define SNAPSYNC_NAMES_H

#include <stdbool.h>
#include <stddef.h>

bool name_space_valid(const char *s, size_t len);       /* ^[a-z0-9][a-z0-9_-]{0,62}$ */
bool name_collection_valid(const char *s, size_t len);  /* ^[a-z][a-z0-9_]{0,62}$ */
bool name_entity_id_valid(const char *s, size_t len);   /* ^[A-Za-z0-9][A-Za-z0-9._:~-]{0,127}$ */
bool name_peer_valid(const char *s, size_t len);        /* same rule as a space */
bool name_sha256_valid(const char *s, size_t len);      /* 64 lower-case hex */
bool name_request_id_valid(const char *s, size_t len);  /* ^[A-Za-z0-9._:-]{1,64}$ */
bool name_asset_valid(const char *s, size_t len);       /* ^[a-z0-9][a-z0-9._-]{0,62}$ (dashboard files) */

/* Decodes %XX escapes of a path segment into out (capacity cap). Returns the
 * decoded length, or -1 for a malformed escape, a NUL or a '/' in the result,
 * or overflow. */
long name_pct_decode(const char *in, size_t len, char *out, size_t cap);

#endif
