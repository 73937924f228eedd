/* age.h - the age v1 file format (https://age-encryption.org/v1) for
 * X25519 recipients, streaming: what off-site snapshots are encrypted with,
 * so that the `age` command-line tool decrypts them with the matching
 * identity (`age -d -i key.txt FILE`).
 *
 * Every primitive is OpenSSL libcrypto's (X25519, HKDF-SHA256,
 * ChaCha20-Poly1305, HMAC-SHA256); this file only lays out the bytes:
 * the header (one "-> X25519" stanza per recipient, the header MAC), the
 * 16-byte payload nonce, then the payload in 64 KiB chunks, each sealed
 * with the STREAM nonce (11-byte big-endian counter, then 1 for the last
 * chunk, 0 otherwise). Keys are bech32 (age1... recipients,
 * AGE-SECRET-KEY-1... identities).
 *
 * Memory: an encryptor or decryptor holds one chunk (64 KiB plus a tag)
 * whatever the size of the payload. Threads: none of its own; one stream
 * belongs to one thread at a time (the server runs them in pool jobs).
 */
#ifndef SNAPSYNC_AGE_H
#define SNAPSYNC_AGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

#define AGE_CHUNK 65536
#define AGE_TAG 16
#define AGE_MAX_RECIPIENTS 16
#define AGE_MAX_HEADER (64 * 1024)

struct age_key {
    unsigned char pub[32];
    unsigned char priv[32];          /* identities only */
    bool has_priv;
};

/* "age1..." into k->pub. 0, or -1 with err. */
int age_parse_recipient(const char *s, struct age_key *k, char *err, size_t errlen);
/* "AGE-SECRET-KEY-1..." into k (pub derived). 0, or -1 with err. */
int age_parse_identity(const char *s, struct age_key *k, char *err, size_t errlen);
/* An identity file as age-keygen writes it ('#' comments, one key a line):
 * up to max keys into out. Returns how many, or -1 with err. Blocks (file). */
int age_load_identities(const char *path, struct age_key *out, int max, char *err, size_t errlen);
/* k's recipient string ("age1...") into out (at least 64 bytes). */
void age_recipient_string(const struct age_key *k, char *out, size_t cap);

/* ---- encrypting ----------------------------------------------------------- */
struct age_enc {
    unsigned char payload_key[32];
    unsigned char pending[AGE_CHUNK];
    size_t npending;
    uint64_t counter;
    bool finished;
};
/* A fresh file key and nonce; the header and the payload nonce go to out.
 * 0, or -1 with err. */
int age_enc_init(struct age_enc *e, const struct age_key *recipients, int n, struct buf *out, char *err,
                 size_t errlen);
/* Appends the ciphertext of what is complete so far to out (a chunk is
 * sealed once it is known not to be the last). 0 or -1 (OpenSSL failed). */
int age_enc_update(struct age_enc *e, const void *in, size_t len, struct buf *out);
/* Seals the last chunk. 0 or -1. */
int age_enc_final(struct age_enc *e, struct buf *out);
/* The size of the whole file for a header of header_len bytes (with the
 * payload nonce) and a payload of plain_len bytes. */
uint64_t age_enc_size(size_t header_len, uint64_t plain_len);
/* Wipes the keys. */
void age_enc_free(struct age_enc *e);

/* ---- decrypting ----------------------------------------------------------- */
struct age_dec {
    const struct age_key *ids;
    int nids;
    struct buf in;                   /* the header while it is read, then the chunk being filled */
    bool header_done;
    unsigned char payload_key[32];
    uint64_t counter;
    bool done;                       /* the last chunk was opened */
};
void age_dec_init(struct age_dec *d, const struct age_key *ids, int n);
/* Feeds ciphertext; plaintext that is certain goes to out. 0, or -1 with
 * err (no identity matches, a bad header MAC, a chunk that does not open). */
int age_dec_update(struct age_dec *d, const void *in, size_t len, struct buf *out, char *err, size_t errlen);
/* At the end of the input: the last chunk. 0, or -1 with err (truncated,
 * tampered). */
int age_dec_final(struct age_dec *d, struct buf *out, char *err, size_t errlen);
void age_dec_free(struct age_dec *d);

/* ---- bech32 (exposed for tests) ------------------------------------------- */
/* Encodes data under hrp (lower case). 0, or -1 when out is too small. */
int bech32_encode(const char *hrp, const unsigned char *data, size_t len, char *out, size_t cap);
/* Decodes s (all lower or all upper case): hrp into hrp_out, the bytes into
 * data. Returns the byte count, or -1 when the string or its checksum is
 * bad. */
int bech32_decode(const char *s, char *hrp_out, size_t hrp_cap, unsigned char *data, size_t cap);

#endif
