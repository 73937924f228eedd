/* age.c - see age.h. The layout follows the age v1 spec
 * (https://age-encryption.org/v1); every primitive is OpenSSL's. */
#include "core/age.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGE_INTRO "age-encryption.org/v1\n"
#define X25519_INFO "age-encryption.org/v1/X25519"

/* ---- bech32 (BIP 173), which age uses for its keys without the 90
 * character limit ---------------------------------------------------------- */

static const char charset[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

static uint32_t polymod(const unsigned char *v, size_t n)
{
    static const uint32_t gen[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3};
    uint32_t chk = 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t top = chk >> 25;
        chk = ((chk & 0x1ffffff) << 5) ^ v[i];
        for (int k = 0; k < 5; k++)
            if ((top >> k) & 1) chk ^= gen[k];
    }
    return chk;
}

/* hrp expanded, then the 5-bit values: the input of the checksum */
static size_t expand(const char *hrp, const unsigned char *d5, size_t n5, unsigned char *out)
{
    size_t h = strlen(hrp), j = 0;
    for (size_t i = 0; i < h; i++) out[j++] = (unsigned char)((unsigned char)hrp[i] >> 5);
    out[j++] = 0;
    for (size_t i = 0; i < h; i++) out[j++] = (unsigned char)(hrp[i] & 31);
    memcpy(out + j, d5, n5);
    return j + n5;
}

int bech32_encode(const char *hrp, const unsigned char *data, size_t len, char *out, size_t cap)
{
    unsigned char d5[256], tmp[400];
    size_t n5 = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (len > 150 || strlen(hrp) > 80) return -1;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | data[i];
        bits += 8;
        while (bits >= 5) { bits -= 5; d5[n5++] = (unsigned char)((acc >> bits) & 31); }
    }
    if (bits) d5[n5++] = (unsigned char)((acc << (5 - bits)) & 31);
    size_t n = expand(hrp, d5, n5, tmp);
    memset(tmp + n, 0, 6);
    uint32_t chk = polymod(tmp, n + 6) ^ 1;
    size_t h = strlen(hrp);
    if (h + 1 + n5 + 6 + 1 > cap) return -1;
    memcpy(out, hrp, h);
    size_t j = h;
    out[j++] = '1';
    for (size_t i = 0; i < n5; i++) out[j++] = charset[d5[i]];
    for (int i = 0; i < 6; i++) out[j++] = charset[(chk >> (5 * (5 - i))) & 31];
    out[j] = '\0';
    return 0;
}

int bech32_decode(const char *s, char *hrp_out, size_t hrp_cap, unsigned char *data, size_t cap)
{
    size_t len = strlen(s);
    bool lower = false, upper = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 33 || s[i] > 126) return -1;
        if (islower((unsigned char)s[i])) lower = true;
        if (isupper((unsigned char)s[i])) upper = true;
    }
    if ((lower && upper) || len > 300) return -1;
    const char *sep = strrchr(s, '1');
    if (!sep || sep == s || (size_t)(s + len - sep) < 7) return -1;
    size_t h = (size_t)(sep - s);
    if (h + 1 > hrp_cap) return -1;
    for (size_t i = 0; i < h; i++) hrp_out[i] = (char)tolower((unsigned char)s[i]);
    hrp_out[h] = '\0';
    unsigned char d5[300], tmp[700];
    size_t n5 = 0;
    for (const char *p = sep + 1; *p; p++) {
        const char *c = strchr(charset, tolower((unsigned char)*p));
        if (!c) return -1;
        d5[n5++] = (unsigned char)(c - charset);
    }
    size_t n = expand(hrp_out, d5, n5, tmp);
    if (polymod(tmp, n) != 1) return -1;
    n5 -= 6;
    uint32_t acc = 0;
    int bits = 0;
    size_t out = 0;
    for (size_t i = 0; i < n5; i++) {
        acc = (acc << 5) | d5[i];
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            if (out == cap) return -1;
            data[out++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    if (bits >= 5 || (acc & ((1u << bits) - 1))) return -1;   /* padding must be zero and short */
    return (int)out;
}

/* ---- keys -------------------------------------------------------------------- */

static int x25519(const unsigned char priv[32], const unsigned char peer[32], unsigned char out[32])
{
    EVP_PKEY *a = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
    EVP_PKEY *b = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, 32);
    EVP_PKEY_CTX *ctx = a ? EVP_PKEY_CTX_new(a, NULL) : NULL;
    size_t n = 32;
    int rc = -1;
    if (ctx && b && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, b) == 1 &&
        EVP_PKEY_derive(ctx, out, &n) == 1 && n == 32)
        rc = 0;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    if (rc == 0) {
        /* an all-zero shared secret means a low-order point: refused */
        unsigned char z = 0;
        for (int i = 0; i < 32; i++) z |= out[i];
        if (!z) rc = -1;
    }
    return rc;
}

static int x25519_public(const unsigned char priv[32], unsigned char pub[32])
{
    EVP_PKEY *a = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
    size_t n = 32;
    int rc = a && EVP_PKEY_get_raw_public_key(a, pub, &n) == 1 && n == 32 ? 0 : -1;
    EVP_PKEY_free(a);
    return rc;
}

int age_parse_recipient(const char *s, struct age_key *k, char *err, size_t errlen)
{
    char hrp[32];
    memset(k, 0, sizeof *k);
    if (bech32_decode(s, hrp, sizeof hrp, k->pub, sizeof k->pub) != 32 || strcmp(hrp, "age")) {
        snprintf(err, errlen, "'%.80s' is not an age X25519 recipient (age1...)", s);
        return -1;
    }
    return 0;
}

int age_parse_identity(const char *s, struct age_key *k, char *err, size_t errlen)
{
    char hrp[32];
    memset(k, 0, sizeof *k);
    if (bech32_decode(s, hrp, sizeof hrp, k->priv, sizeof k->priv) != 32 || strcmp(hrp, "age-secret-key-") ||
        x25519_public(k->priv, k->pub) < 0) {
        OPENSSL_cleanse(k, sizeof *k);
        snprintf(err, errlen, "not an age X25519 identity (AGE-SECRET-KEY-1...)");   /* never echo a secret */
        return -1;
    }
    k->has_priv = true;
    return 0;
}

int age_load_identities(const char *path, struct age_key *out, int max, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read the identity file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    int n = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' ')) line[--l] = '\0';
        if (!l || line[0] == '#') continue;
        if (n == max) break;
        if (age_parse_identity(line, &out[n], err, errlen) < 0) {
            snprintf(err, errlen, "%s line %d is not an age X25519 identity (AGE-SECRET-KEY-1...)", path, lineno);
            OPENSSL_cleanse(line, sizeof line);
            fclose(f);
            return -1;
        }
        n++;
    }
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    if (!n) snprintf(err, errlen, "%s holds no age identity", path);
    return n ? n : -1;
}

void age_recipient_string(const struct age_key *k, char *out, size_t cap)
{
    if (bech32_encode("age", k->pub, 32, out, cap) < 0 && cap) out[0] = '\0';
}

/* ---- primitives, all OpenSSL's ------------------------------------------------- */

static int hkdf(const unsigned char *ikm, size_t ikm_len, const unsigned char *salt, size_t salt_len,
                const char *info, unsigned char *out, size_t out_len)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t n = out_len;
    int rc = c && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_CTX_set_hkdf_md(c, EVP_sha256()) == 1 &&
                     EVP_PKEY_CTX_set1_hkdf_salt(c, salt_len ? salt : (const unsigned char *)"", (int)salt_len) == 1 &&
                     EVP_PKEY_CTX_set1_hkdf_key(c, ikm, (int)ikm_len) == 1 &&
                     EVP_PKEY_CTX_add1_hkdf_info(c, (const unsigned char *)info, (int)strlen(info)) == 1 &&
                     EVP_PKEY_derive(c, out, &n) == 1 && n == out_len
                 ? 0
                 : -1;
    EVP_PKEY_CTX_free(c);
    return rc;
}

/* ChaCha20-Poly1305 seal (enc) or open; out holds len (+ tag when sealing)
 * bytes. 0, or -1 (for open: the tag does not match). */
static int aead(bool enc, const unsigned char key[32], const unsigned char nonce[12], const unsigned char *in,
                size_t len, unsigned char *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, rc = -1;
    if (!c) return -1;
    if (EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1 ||
        EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, AGE_TAG, (void *)(in + len)) != 1) goto out;
    if (len && EVP_CipherUpdate(c, out, &n, in, (int)len) != 1) goto out;
    if (EVP_CipherFinal_ex(c, out + n, &n) != 1) goto out;
    if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, AGE_TAG, out + len) != 1) goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(c);
    return rc;
}

static int header_mac(const unsigned char file_key[16], const char *hdr, size_t len, unsigned char mac[32])
{
    unsigned char k[32];
    unsigned int n = 32;
    if (hkdf(file_key, 16, NULL, 0, "header", k, 32) < 0) return -1;
    int rc = HMAC(EVP_sha256(), k, 32, (const unsigned char *)hdr, len, mac, &n) && n == 32 ? 0 : -1;
    OPENSSL_cleanse(k, sizeof k);
    return rc;
}

/* base64 without padding (age's canonical form) */
static void b64_put(struct buf *b, const unsigned char *d, size_t len)
{
    unsigned char tmp[4 * 48 / 3 + 4];
    for (size_t off = 0; off < len; off += 48) {
        size_t n = len - off < 48 ? len - off : 48;
        int w = EVP_EncodeBlock(tmp, d + off, (int)n);
        while (w > 0 && tmp[w - 1] == '=') w--;
        buf_append(b, tmp, (size_t)w);
    }
}

/* unpadded base64 of exactly want bytes (the canonical encoding only) */
static int b64_get(const char *s, size_t len, unsigned char *out, size_t want)
{
    if (len != (want * 4 + 2) / 3 || len > 120) return -1;
    char tmp[128];
    unsigned char dec[96];
    memcpy(tmp, s, len);
    size_t l = len;
    while (l % 4) tmp[l++] = '=';
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '+' && s[i] != '/') return -1;
    int n = EVP_DecodeBlock(dec, (const unsigned char *)tmp, (int)l);
    if (n < (int)want) return -1;
    memcpy(out, dec, want);
    /* the unused low bits of the last character must be zero */
    struct buf b;
    buf_init(&b);
    b64_put(&b, out, want);
    int rc = b.len == len && !memcmp(b.data, s, len) ? 0 : -1;
    buf_free(&b);
    return rc;
}

/* ---- encrypting ------------------------------------------------------------------ */

static int x25519_stanza(struct buf *out, const struct age_key *r, const unsigned char file_key[16])
{
    unsigned char eph[32], share[32], shared[32], salt[64], wrap[32], body[16 + AGE_TAG];
    static const unsigned char zero_nonce[12];
    int rc = -1;
    if (RAND_bytes(eph, 32) != 1 || x25519_public(eph, share) < 0 || x25519(eph, r->pub, shared) < 0) goto out;
    memcpy(salt, share, 32);
    memcpy(salt + 32, r->pub, 32);
    if (hkdf(shared, 32, salt, 64, X25519_INFO, wrap, 32) < 0 || aead(true, wrap, zero_nonce, file_key, 16, body) < 0)
        goto out;
    buf_puts(out, "-> X25519 ");
    b64_put(out, share, 32);
    buf_putc(out, '\n');
    b64_put(out, body, sizeof body);   /* 43 characters: one short line */
    buf_putc(out, '\n');
    rc = 0;
out:
    OPENSSL_cleanse(eph, sizeof eph);
    OPENSSL_cleanse(shared, sizeof shared);
    OPENSSL_cleanse(wrap, sizeof wrap);
    return rc;
}

int age_enc_init(struct age_enc *e, const struct age_key *recipients, int n, struct buf *out, char *err,
                 size_t errlen)
{
    unsigned char file_key[16], nonce[16], mac[32];
    memset(e, 0, sizeof *e);
    size_t start = out->len;
    if (n < 1 || RAND_bytes(file_key, 16) != 1 || RAND_bytes(nonce, 16) != 1) goto fail;
    buf_puts(out, AGE_INTRO);
    for (int i = 0; i < n; i++)
        if (x25519_stanza(out, &recipients[i], file_key) < 0) goto fail;
    buf_puts(out, "---");
    if (header_mac(file_key, out->data + start, out->len - start, mac) < 0) goto fail;
    buf_putc(out, ' ');
    b64_put(out, mac, 32);
    buf_putc(out, '\n');
    buf_append(out, nonce, 16);
    if (hkdf(file_key, 16, nonce, 16, "payload", e->payload_key, 32) < 0) goto fail;
    OPENSSL_cleanse(file_key, sizeof file_key);
    return 0;
fail:
    OPENSSL_cleanse(file_key, sizeof file_key);
    out->len = start;
    snprintf(err, errlen, "age encryption could not start (OpenSSL failed)");
    return -1;
}

static void stream_nonce(uint64_t counter, bool last, unsigned char nonce[12])
{
    memset(nonce, 0, 12);
    for (int i = 0; i < 8; i++) nonce[10 - i] = (unsigned char)(counter >> (8 * i));
    nonce[11] = last ? 1 : 0;
}

static int seal_chunk(struct age_enc *e, bool last, struct buf *out)
{
    unsigned char nonce[12];
    stream_nonce(e->counter++, last, nonce);
    buf_reserve(out, e->npending + AGE_TAG);
    if (aead(true, e->payload_key, nonce, e->pending, e->npending, (unsigned char *)out->data + out->len) < 0)
        return -1;
    out->len += e->npending + AGE_TAG;
    e->npending = 0;
    return 0;
}

int age_enc_update(struct age_enc *e, const void *in, size_t len, struct buf *out)
{
    const unsigned char *p = in;
    while (len) {
        /* a full chunk is sealed only once more bytes come: until then it
         * may be the last one */
        if (e->npending == AGE_CHUNK && seal_chunk(e, false, out) < 0) return -1;
        size_t take = AGE_CHUNK - e->npending < len ? AGE_CHUNK - e->npending : len;
        memcpy(e->pending + e->npending, p, take);
        e->npending += take;
        p += take;
        len -= take;
    }
    return 0;
}

int age_enc_final(struct age_enc *e, struct buf *out)
{
    if (e->finished) return 0;
    e->finished = true;
    return seal_chunk(e, true, out);
}

uint64_t age_enc_size(size_t header_len, uint64_t plain_len)
{
    uint64_t chunks = plain_len ? (plain_len + AGE_CHUNK - 1) / AGE_CHUNK : 1;
    return header_len + plain_len + chunks * AGE_TAG;
}

void age_enc_free(struct age_enc *e) { OPENSSL_cleanse(e, sizeof *e); }

/* ---- decrypting ------------------------------------------------------------------ */

void age_dec_init(struct age_dec *d, const struct age_key *ids, int n)
{
    memset(d, 0, sizeof *d);
    d->ids = ids;
    d->nids = n;
    buf_init(&d->in);
}

void age_dec_free(struct age_dec *d)
{
    if (d->in.data) OPENSSL_cleanse(d->in.data, d->in.len);
    buf_free(&d->in);
    OPENSSL_cleanse(d->payload_key, sizeof d->payload_key);
}

/* one X25519 stanza against every identity: the file key when one opens it */
static int open_stanza(struct age_dec *d, const char *arg, size_t arglen, const char *body, size_t bodylen,
                       unsigned char file_key[16])
{
    unsigned char share[32], wrapped[16 + AGE_TAG], shared[32], salt[64], wrap[32];
    static const unsigned char zero_nonce[12];
    if (b64_get(arg, arglen, share, 32) < 0 || b64_get(body, bodylen, wrapped, sizeof wrapped) < 0) return -2;
    for (int i = 0; i < d->nids; i++) {
        if (x25519(d->ids[i].priv, share, shared) < 0) continue;
        memcpy(salt, share, 32);
        memcpy(salt + 32, d->ids[i].pub, 32);
        int ok = hkdf(shared, 32, salt, 64, X25519_INFO, wrap, 32) == 0 &&
                 aead(false, wrap, zero_nonce, wrapped, 16, file_key) == 0;
        OPENSSL_cleanse(shared, sizeof shared);
        OPENSSL_cleanse(wrap, sizeof wrap);
        if (ok) return 0;
    }
    return -1;
}

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto fail; } while (0)

/* The header is complete in d->in up to end (the nonce's first byte):
 * find the file key, check the MAC, derive the payload key. */
static int parse_header(struct age_dec *d, size_t end, char *err, size_t errlen)
{
    const char *h = d->in.data;
    unsigned char file_key[16], mac[32], want[32];
    bool have_key = false;
    if (strncmp(h, AGE_INTRO, strlen(AGE_INTRO))) FAIL("not an age v1 file");
    size_t pos = strlen(AGE_INTRO);
    for (;;) {
        const char *line = h + pos, *nl = memchr(line, '\n', end - pos);
        if (!nl) FAIL("the age header is damaged");
        size_t l = (size_t)(nl - line);
        if (l >= 4 && !memcmp(line, "--- ", 4)) {
            if (!have_key) FAIL("no identity given matches a recipient of this file");
            if (b64_get(line + 4, l - 4, mac, 32) < 0) FAIL("the age header is damaged");
            if (header_mac(file_key, h, pos + 3, want) < 0 || CRYPTO_memcmp(mac, want, 32))
                FAIL("the age header's MAC does not match: the file was altered");
            if (nl + 1 + 16 != h + end) FAIL("the age header is damaged");
            if (hkdf(file_key, 16, (const unsigned char *)nl + 1, 16, "payload", d->payload_key, 32) < 0)
                FAIL("age: OpenSSL failed");
            OPENSSL_cleanse(file_key, sizeof file_key);
            return 0;
        }
        if (l < 3 || memcmp(line, "-> ", 3)) FAIL("the age header is damaged");
        /* the stanza's body: lines of 64 characters, ended by a shorter one */
        size_t bstart = (size_t)(nl + 1 - h), bpos = bstart, blen = 0;
        for (;;) {
            const char *bl = h + bpos, *bnl = memchr(bl, '\n', end - bpos);
            if (!bnl) FAIL("the age header is damaged");
            size_t n = (size_t)(bnl - bl);
            if (n > 64) FAIL("the age header is damaged");
            blen += n;
            bpos += n + 1;
            if (n < 64) break;
        }
        if (!have_key && l > 10 && !memcmp(line, "-> X25519 ", 10) && blen == bpos - bstart - 1) {
            int rc = open_stanza(d, line + 10, l - 10, h + bstart, blen, file_key);
            if (rc == -2) FAIL("the age header is damaged");
            have_key = rc == 0;
        }
        pos = bpos;
    }
fail:
    OPENSSL_cleanse(file_key, sizeof file_key);
    return -1;
}

static int open_chunk(struct age_dec *d, const unsigned char *c, size_t len, bool last, struct buf *out, char *err,
                      size_t errlen)
{
    unsigned char nonce[12];
    if (len < AGE_TAG || (last && len == AGE_TAG && d->counter > 0)) {
        snprintf(err, errlen, "the age payload is truncated");
        return -1;
    }
    stream_nonce(d->counter++, last, nonce);
    buf_reserve(out, len);
    if (aead(false, d->payload_key, nonce, c, len - AGE_TAG, (unsigned char *)out->data + out->len) < 0) {
        snprintf(err, errlen, "age: chunk %llu does not authenticate: the file was altered or truncated",
                 (unsigned long long)(d->counter - 1));
        return -1;
    }
    out->len += len - AGE_TAG;
    if (last) d->done = true;
    return 0;
}

int age_dec_update(struct age_dec *d, const void *in, size_t len, struct buf *out, char *err, size_t errlen)
{
    const char *p = in;
    if (d->done && len) {
        snprintf(err, errlen, "age: data after the last chunk");
        return -1;
    }
    if (!d->header_done) {
        /* bytes go in one at a time until the MAC line and the nonce are in */
        size_t before = d->in.len;
        buf_append(&d->in, p, len);
        /* the MAC line: the first line that starts with "--- " (stanza
         * lines start with "-> " and bodies are base64) */
        UNUSED(before);
        const char *mac = memmem(d->in.data, d->in.len, "\n--- ", 5);
        if (mac) mac++;
        const char *nl = mac ? memchr(mac, '\n', (size_t)(d->in.data + d->in.len - mac)) : NULL;
        if (!nl || (size_t)(d->in.data + d->in.len - (nl + 1)) < 16) {
            if (d->in.len > AGE_MAX_HEADER) {
                snprintf(err, errlen, "not an age v1 file (no header end within %d bytes)", AGE_MAX_HEADER);
                return -1;
            }
            return 0;
        }
        size_t end = (size_t)(nl + 1 - d->in.data) + 16;
        if (parse_header(d, end, err, errlen) < 0) return -1;
        d->header_done = true;
        size_t rest = d->in.len - end;
        memmove(d->in.data, d->in.data + end, rest);
        d->in.len = rest;
        p = NULL;
        len = 0;
    }
    /* a whole chunk is opened once a byte beyond it shows it is not the last */
    while (len || d->in.len > AGE_CHUNK + AGE_TAG) {
        if (d->in.len > AGE_CHUNK + AGE_TAG) {
            if (open_chunk(d, (unsigned char *)d->in.data, AGE_CHUNK + AGE_TAG, false, out, err, errlen) < 0) return -1;
            memmove(d->in.data, d->in.data + AGE_CHUNK + AGE_TAG, d->in.len - AGE_CHUNK - AGE_TAG);
            d->in.len -= AGE_CHUNK + AGE_TAG;
            continue;
        }
        size_t room = AGE_CHUNK + AGE_TAG + 1 - d->in.len;
        size_t take = len < room ? len : room;
        buf_append(&d->in, p, take);
        p += take;
        len -= take;
    }
    return 0;
}

int age_dec_final(struct age_dec *d, struct buf *out, char *err, size_t errlen)
{
    if (d->done) return 0;
    if (!d->header_done) {
        snprintf(err, errlen, "not an age v1 file, or its header is truncated");
        return -1;
    }
    int rc = open_chunk(d, (unsigned char *)d->in.data, d->in.len, true, out, err, errlen);
    d->in.len = 0;
    return rc;
}
#undef FAIL
