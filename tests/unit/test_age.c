/* Unit tests: core/age.c, the age v1 writer and reader. A round trip at
 * the sizes where chunking has edges, a file made by the `age` CLI
 * (fixtures/age-cli.age) read with its identity, and altered files
 * refused: a flipped payload byte, a flipped header byte, a truncated
 * payload, a wrong identity. argv[1]: the fixtures directory. */
#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/age.h"
#include "test.h"

static void sha256_hex(const void *d, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int l = 32;
    EVP_Digest(d, n, md, &l, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", md[i]);
}

/* encrypt plain in pieces of `step` bytes */
static void encrypt(const struct age_key *r, int nr, const unsigned char *plain, size_t n, size_t step, struct buf *out)
{
    struct age_enc e;
    char err[200];
    size_t hdr0 = out->len;
    CHECK_INT(age_enc_init(&e, r, nr, out, err, sizeof err), 0);
    size_t hdr = out->len - hdr0;
    for (size_t off = 0; off < n; off += step)
        CHECK_INT(age_enc_update(&e, plain + off, n - off < step ? n - off : step, out), 0);
    CHECK_INT(age_enc_final(&e, out), 0);
    CHECK_INT(out->len - hdr0, age_enc_size(hdr, n));
    age_enc_free(&e);
}

/* decrypt in pieces of `step`: 0 with the plaintext, or -1 with err */
static int decrypt(const struct age_key *ids, int n, const struct buf *in, size_t step, struct buf *out, char *err,
                   size_t errlen)
{
    struct age_dec d;
    age_dec_init(&d, ids, n);
    int rc = 0;
    for (size_t off = 0; off < in->len && rc == 0; off += step)
        rc = age_dec_update(&d, in->data + off, in->len - off < step ? in->len - off : step, out, err, errlen);
    if (rc == 0) rc = age_dec_final(&d, out, err, errlen);
    age_dec_free(&d);
    return rc;
}

static void test_bech32(void)
{
    char s[128], hrp[32];
    unsigned char d[32], back[40];
    for (int i = 0; i < 32; i++) d[i] = (unsigned char)(i * 7);
    CHECK_INT(bech32_encode("age", d, 32, s, sizeof s), 0);
    CHECK_INT(bech32_decode(s, hrp, sizeof hrp, back, sizeof back), 32);
    CHECK_STR(hrp, "age");
    CHECK(!memcmp(d, back, 32));
    s[10] = s[10] == 'q' ? 'p' : 'q';       /* one character changed: the checksum fails */
    CHECK_INT(bech32_decode(s, hrp, sizeof hrp, back, sizeof back), -1);
}

static void test_round_trip(const struct age_key *id, const struct age_key *other)
{
    static const size_t sizes[] = {0, 1, 1000, AGE_CHUNK - 1, AGE_CHUNK, AGE_CHUNK + 1, 3 * AGE_CHUNK, 300001};
    static const size_t steps[] = {1, 4096, AGE_CHUNK, 1 << 20};
    size_t max = 300001;
    unsigned char *plain = malloc(max);
    for (size_t i = 0; i < max; i++) plain[i] = (unsigned char)(i * 31 + (i >> 9));
    struct age_key rcp[2] = {*other, *id};
    rcp[0].has_priv = rcp[1].has_priv = false;
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        for (size_t k = 0; k < ARRAY_SIZE(steps); k++) {
            struct buf c, p;
            char err[200] = "";
            buf_init(&c);
            buf_init(&p);
            encrypt(rcp, 2, plain, sizes[i], steps[k], &c);
            int rc = decrypt(id, 1, &c, steps[(k + 1) % ARRAY_SIZE(steps)], &p, err, sizeof err);
            if (rc) fprintf(stderr, "size %zu step %zu: %s\n", sizes[i], steps[k], err);
            CHECK_INT(rc, 0);
            CHECK_INT(p.len, sizes[i]);
            CHECK(p.len == sizes[i] && (!p.len || !memcmp(p.data, plain, p.len)));
            buf_free(&c);
            buf_free(&p);
        }
    }
    free(plain);
}

static void test_refused(const struct age_key *id, const struct age_key *other)
{
    size_t n = 3 * AGE_CHUNK + 5;
    unsigned char *plain = calloc(1, n);
    struct buf c, p;
    char err[200];
    buf_init(&c);
    buf_init(&p);
    struct age_key r = *id;
    encrypt(&r, 1, plain, n, 65536, &c);
    /* a byte of the second chunk */
    c.data[c.len - 2 * (AGE_CHUNK + AGE_TAG)] ^= 1;
    CHECK_INT(decrypt(id, 1, &c, 8192, &p, err, sizeof err), -1);
    CHECK(strstr(err, "chunk 1") != NULL);
    c.data[c.len - 2 * (AGE_CHUNK + AGE_TAG)] ^= 1;
    /* a byte of the header (the stanza's share) */
    char *share = strstr(c.data, "X25519 ") + 7, was = *share;
    *share = was == 'A' ? 'B' : 'A';
    buf_reset(&p);
    CHECK_INT(decrypt(id, 1, &c, 8192, &p, err, sizeof err), -1);
    *share = was;
    /* the intro line: the MAC no longer matches */
    c.data[3] = 'X';
    buf_reset(&p);
    CHECK_INT(decrypt(id, 1, &c, 8192, &p, err, sizeof err), -1);
    c.data[3] = '-';
    /* cut at a chunk boundary: the last chunk read is not marked last */
    size_t full = c.len;
    c.len = full - 5 - AGE_TAG;
    buf_reset(&p);
    CHECK_INT(decrypt(id, 1, &c, 8192, &p, err, sizeof err), -1);
    c.len = full;
    /* the wrong identity */
    buf_reset(&p);
    CHECK_INT(decrypt(other, 1, &c, 8192, &p, err, sizeof err), -1);
    CHECK(strstr(err, "no identity") != NULL);
    /* and the untouched file still opens */
    buf_reset(&p);
    CHECK_INT(decrypt(id, 1, &c, 8192, &p, err, sizeof err), 0);
    CHECK_INT(p.len, n);
    buf_free(&c);
    buf_free(&p);
    free(plain);
}

static void test_cli_file(const char *dir)
{
    char path[1024], err[200];
    struct age_key ids[4];
    snprintf(path, sizeof path, "%s/age-key.txt", dir);
    CHECK_INT(age_load_identities(path, ids, 4, err, sizeof err), 1);
    snprintf(path, sizeof path, "%s/age-cli.age", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) return;
    struct buf c, p;
    buf_init(&c);
    buf_init(&p);
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf_append(&c, tmp, n);
    fclose(f);
    CHECK_INT(decrypt(ids, 1, &c, 10000, &p, err, sizeof err), 0);
    char hex[65];
    sha256_hex(p.data, p.len, hex);
    CHECK_STR(hex, "cc2a85f9e6263a6bc27d070a1d9bbf7fc38d8cd4546bb741cd910df4d1266871");
    /* its recipient, as age-keygen printed it in the file's comment */
    char rcp[100];
    age_recipient_string(&ids[0], rcp, sizeof rcp);
    CHECK(!strncmp(rcp, "age1", 4) && strlen(rcp) == 62);
    buf_free(&c);
    buf_free(&p);
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: test_age FIXTURES_DIR\n"); return 2; }
    struct age_key id, other;
    char err[200], s[128];
    unsigned char priv[32];
    for (int i = 0; i < 32; i++) priv[i] = (unsigned char)(i + 1);
    CHECK_INT(bech32_encode("age-secret-key-", priv, 32, s, sizeof s), 0);
    for (char *c = s; *c; c++) *c = (char)toupper((unsigned char)*c);
    CHECK_INT(age_parse_identity(s, &id, err, sizeof err), 0);
    priv[0] = 99;
    CHECK_INT(bech32_encode("age-secret-key-", priv, 32, s, sizeof s), 0);
    CHECK_INT(age_parse_identity(s, &other, err, sizeof err), 0);
    char rs[100];
    age_recipient_string(&id, rs, sizeof rs);
    struct age_key r;
    CHECK_INT(age_parse_recipient(rs, &r, err, sizeof err), 0);
    CHECK(!memcmp(r.pub, id.pub, 32));
    CHECK_INT(age_parse_recipient("age1notakey", &r, err, sizeof err), -1);
    test_bech32();
    test_round_trip(&id, &other);
    test_refused(&id, &other);
    test_cli_file(argv[1]);
    TEST_MAIN_END();
}
