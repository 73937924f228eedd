/* entity.c - see entity.h. */
#include "core/entity.h"
#include "core/json.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/canon.h"
#include "core/util.h"

static EVP_MD_CTX *md_ctx(void)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) abort();
    if (EVP_DigestInit_ex(ctx, sha256_md(), NULL) != 1) abort();
    return ctx;
}

static void md_put(EVP_MD_CTX *ctx, const void *p, size_t n)
{
    if (n && EVP_DigestUpdate(ctx, p, n) != 1) abort();
}

static void md_end(EVP_MD_CTX *ctx, unsigned char out[32])
{
    unsigned int l = 32;
    if (EVP_DigestFinal_ex(ctx, out, &l) != 1) abort();
    EVP_MD_CTX_free(ctx);
}

char *entity_canonical_value(const json_t *v, size_t *out_len, struct json_err *err)
{
    /* jansson's text, then the one canonicalizer: same bytes as a PUT */
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!s) abort();                 /* only on out-of-memory */
    char *c = json_canonical(s, strlen(s), false, out_len, err);
    free(s);
    return c;                        /* NULL: a key with \u0000, which jansson lets through */
}

char *entity_canonical(const char *text, size_t len, bool want_object, size_t *out_len, struct json_err *err)
{
    return json_canonical(text, len, want_object, out_len, err);
}

int rev_make(const char *parent, bool deleted, const char *body, size_t len, char out[REV_MAX])
{
    uint64_t n = 0;
    const char *h;
    if (parent && rev_parse(parent, &n, &h) < 0) n = 0;
    if (n >= REV_N_MAX) {
        out[0] = '\0';
        return -1;
    }
    EVP_MD_CTX *ctx = md_ctx();
    unsigned char md[32];
    if (parent) md_put(ctx, parent, strlen(parent));
    md_put(ctx, deleted ? "\n1\n" : "\n0\n", 3);
    if (body) md_put(ctx, body, len);
    md_end(ctx, md);
    char hex[17];
    hex_encode(hex, md, 8);
    snprintf(out, REV_MAX, "%llu-%s", (unsigned long long)(n + 1), hex);
    return 0;
}

void rev_history_push(char *out, size_t cap, const char *rev, const char *old)
{
    size_t n = (size_t)snprintf(out, cap, "%s", rev);
    int count = 1;
    const char *p = old;
    while (*p && count < REV_HISTORY - 1) {
        const char *sp = strchr(p, ' ');
        size_t l = sp ? (size_t)(sp - p) : strlen(p);
        if (n + l + 2 >= cap) break;
        out[n++] = ' ';
        memcpy(out + n, p, l);
        n += l;
        out[n] = '\0';
        count++;
        if (!sp) break;
        p = sp + 1;
    }
}

void rev_history_json(struct buf *b, const char *rev, const char *hist)
{
    buf_putc(b, '[');
    json_cstr(b, rev);
    for (const char *p = hist; p && *p;) {
        const char *sp = strchr(p, ' ');
        size_t l = sp ? (size_t)(sp - p) : strlen(p);
        buf_putc(b, ',');
        json_str(b, p, l);
        if (!sp) break;
        p = sp + 1;
    }
    buf_putc(b, ']');
}

int rev_parse(const char *rev, uint64_t *n, const char **hash)
{
    const char *dash = rev ? strchr(rev, '-') : NULL;
    if (!dash || dash == rev || rev[0] == '0') return -1;          /* N >= 1, one spelling each */
    if (parse_u64(rev, (size_t)(dash - rev), REV_N_MAX, n) < 0) return -1;
    const char *h = dash + 1;
    size_t hl = strlen(h);
    if (hl < 1 || hl > 64) return -1;
    for (size_t i = 0; i < hl; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f'))) return -1;
    *hash = h;
    return 0;
}

bool rev_valid(const char *rev)
{
    uint64_t n;
    const char *h;
    return rev && strlen(rev) < REV_MAX && rev_parse(rev, &n, &h) == 0;
}

int rev_cmp(const char *a, const char *b)
{
    uint64_t na = 0, nb = 0;
    const char *ha = "", *hb = "";
    rev_parse(a, &na, &ha);
    rev_parse(b, &nb, &hb);
    if (na != nb) return na < nb ? -1 : 1;
    return strcmp(ha, hb);
}

void digest_item(struct digest *out, const char *collection, const char *id, const char *rev, bool deleted)
{
    EVP_MD_CTX *ctx = md_ctx();
    md_put(ctx, collection, strlen(collection) + 1);
    md_put(ctx, id, strlen(id) + 1);
    md_put(ctx, rev, strlen(rev) + 1);
    md_put(ctx, deleted ? "1" : "0", 1);
    md_end(ctx, out->b);
}

void digest_xor(struct digest *acc, const struct digest *item)
{
    for (int i = 0; i < 32; i++) acc->b[i] ^= item->b[i];
}

void digest_hex(const struct digest *d, char out[65]) { hex_encode(out, d->b, 32); }

int digest_from_hex(struct digest *d, const char *hex)
{
    if (!hex || strlen(hex) != 64) return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        d->b[i] = (uint8_t)v;
    }
    return 0;
}

bool rev_in_history(const char *hist, const char *rev)
{
    size_t rl = strlen(rev);
    for (const char *p = hist; p && *p;) {
        const char *sp = strchr(p, ' ');
        size_t l = sp ? (size_t)(sp - p) : strlen(p);
        if (l == rl && !memcmp(p, rev, rl)) return true;
        if (!sp) break;
        p = sp + 1;
    }
    return false;
}

int rev_winner(const char *a, bool a_deleted, const char *b, bool b_deleted)
{
    if (a_deleted != b_deleted) return a_deleted ? -1 : 1;    /* an edit beats a delete */
    return rev_cmp(a, b);
}

enum rep_action rep_decide(const char *local_rev, bool local_deleted, const char *local_hist, const char *in_rev,
                           bool in_deleted, const char *in_hist)
{
    if (!local_rev) return REP_INSERT;
    if (!strcmp(local_rev, in_rev) || rev_in_history(local_hist, in_rev)) return REP_IGNORE;
    if (rev_in_history(in_hist, local_rev)) return REP_FASTFORWARD;
    return rev_winner(in_rev, in_deleted, local_rev, local_deleted) > 0 ? REP_REMOTE_WINS : REP_LOCAL_WINS;
}

void entity_json(struct buf *b, const char *coll, const char *id, const char *rev, uint64_t version,
                 uint64_t created, uint64_t updated, bool deleted, const char *body, size_t body_len)
{
    buf_reserve(b, body_len + 200);
    buf_puts(b, "{\"collection\":");
    json_cstr(b, coll);
    buf_puts(b, ",\"id\":");
    json_cstr(b, id);
    buf_puts(b, ",\"rev\":");
    json_cstr(b, rev);
    json_kv_u64(b, "version", version);
    json_kv_time(b, "created_at", created);
    json_kv_time(b, "updated_at", updated);
    json_kv_bool(b, "deleted", deleted);
    buf_puts(b, ",\"body\":");
    if (body && !deleted) buf_append(b, body, body_len);     /* canonical JSON, verbatim */
    else buf_puts(b, "null");
    buf_putc(b, '}');
}
