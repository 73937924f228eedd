/* names.c - see names.h. Pure functions, any thread. */
#include "core/names.h"

static inline bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
static inline bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool is_alnum(char c) { return is_lower(c) || is_upper(c) || is_digit(c); }

bool name_space_valid(const char *s, size_t len)
{
    if (len < 1 || len > 63) return false;
    if (!is_lower(s[0]) && !is_digit(s[0])) return false;
    for (size_t i = 1; i < len; i++)
        if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '_' && s[i] != '-') return false;
    return true;
}

bool name_collection_valid(const char *s, size_t len)
{
    if (len < 1 || len > 63 || !is_lower(s[0])) return false;
    for (size_t i = 1; i < len; i++)
        if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '_') return false;
    return true;
}

bool name_entity_id_valid(const char *s, size_t len)
{
    if (len < 1 || len > 128 || !is_alnum(s[0])) return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '~' && c != '-') return false;
    }
    return true;
}

bool name_peer_valid(const char *s, size_t len) { return name_space_valid(s, len); }

bool name_sha256_valid(const char *s, size_t len)
{
    if (len != 64) return false;
    for (size_t i = 0; i < len; i++)
        if (!is_digit(s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) return false;
    return true;
}

bool name_request_id_valid(const char *s, size_t len)
{
    if (len < 1 || len > 64) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '-') return false;
    }
    return true;
}

bool name_asset_valid(const char *s, size_t len)
{
    if (len < 1 || len > 63 || !(is_lower(s[0]) || is_digit(s[0]))) return false;
    for (size_t i = 1; i < len; i++)
        if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-') return false;
    return true;
}

static int hexval(char c)
{
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long name_pct_decode(const char *in, size_t len, char *out, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= len) return -1;
            int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
            if (h < 0 || l < 0) return -1;
            c = (char)(h * 16 + l);
            i += 2;
        }
        if (c == '\0' || c == '/') return -1;   /* raw or decoded: never in a segment */
        if (j >= cap) return -1;
        out[j++] = c;
    }
    return (long)j;
}
