/* util.h - small building blocks shared by every module.
 *
 * xmalloc and friends abort on out-of-memory (there are no untested OOM
 * branches anywhere else). struct buf is a growable byte buffer; struct rbuf
 * is an immutable, reference-counted byte block that the loop thread shares
 * between many writers (SSE fan-out) without copying. The intrusive list is
 * libuv's QUEUE idea with names that read.
 */
#ifndef SNAPSYNC_UTIL_H
#define SNAPSYNC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
#define UNUSED(x) ((void)(x))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Growable buffer. Always NUL-terminated past len (when data != NULL). */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
void buf_put_u64(struct buf *b, uint64_t v);
void buf_put_i64(struct buf *b, int64_t v);
/* Hands the bytes to the caller (free() them) and leaves b empty. */
char *buf_steal(struct buf *b, size_t *len);
static inline void buf_reset(struct buf *b) { b->len = 0; if (b->data) b->data[0] = '\0'; }

/* Reference-counted immutable bytes. Not thread-safe: loop thread only. */
struct rbuf {
    uint32_t refs;
    size_t len;
    char data[];
};
struct rbuf *rbuf_new(const void *data, size_t len);
struct rbuf *rbuf_from_buf(struct buf *b);  /* steals b's bytes (one copy) */
static inline struct rbuf *rbuf_ref(struct rbuf *r) { r->refs++; return r; }
void rbuf_unref(struct rbuf *r);

/* Intrusive doubly linked list (circular, with a head node). */
struct list { struct list *prev, *next; };
static inline void list_init(struct list *h) { h->prev = h->next = h; }
static inline bool list_empty(const struct list *h) { return h->next == h; }
static inline void list_insert_tail(struct list *h, struct list *n)
{
    n->next = h; n->prev = h->prev; h->prev->next = n; h->prev = n;
}
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next; n->next->prev = n->prev; n->prev = n->next = n;
}
static inline bool list_linked(const struct list *n) { return n->next != n && n->next != NULL; }
#define list_foreach_safe(pos, tmp, head) \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

/* Time. */
uint64_t now_ms_wall(void);               /* ms since the epoch */
uint64_t now_ns_mono(void);               /* monotonic ns */
/* RFC 3339 UTC with milliseconds into out (>= 25 bytes). Returns length. */
size_t fmt_time_ms(char *out, uint64_t ms_epoch);
/* The inverse: exactly the form fmt_time_ms writes (24 bytes,
 * "YYYY-MM-DDTHH:MM:SS.mmmZ", 1970 or later), into ms since the epoch.
 * Returns 0, or -1 for anything else (no other offsets or precisions). */
int parse_time_ms(const char *s, size_t len, uint64_t *out);

/* Randomness from getrandom(); aborts if the kernel refuses. */
void random_bytes(void *out, size_t n);
/* Writes all n bytes to fd (retrying short writes and EINTR). Returns 0, or
 * the errno of the write that failed. Blocking: threadpool or CLI only. */
int write_full(int fd, const void *p, size_t n);
/* ULID: 26 chars of Crockford base32, time-sortable. out >= 27 bytes. */
void ulid_make(char out[27], uint64_t ms_epoch);
bool ulid_valid(const char *s, size_t len);

/* An IPv4 or IPv6 network: "192.0.2.7", "10.0.0.0/8", "::1", "fd00::/8". */
struct cidr {
    int family;                      /* AF_INET or AF_INET6 */
    unsigned bits;
    unsigned char addr[16];
};
bool cidr_parse(const char *s, size_t len, struct cidr *out);
/* Is the address text ip (no port, no brackets) inside one of the n nets? */
bool cidr_match(const struct cidr *nets, int n, const char *ip, size_t len);
/* the same for an address already parsed (family, 4 or 16 bytes) */
bool cidr_contains(const struct cidr *nets, int n, int family, const unsigned char *addr);
void hex_encode(char *out, const unsigned char *in, size_t n);   /* out >= 2n+1 */

/* Length (1..4) of the valid UTF-8 sequence at p (n bytes left), 0 if
 * invalid (overlong, surrogate, past U+10FFFF, truncated). */
size_t utf8_seq_len(const unsigned char *p, size_t n);

/* SHA-256 for EVP_* calls, fetched once (thread-safe). */
struct evp_md_st;
const struct evp_md_st *sha256_md(void);

/* Constant-time comparison of n bytes. */
bool ct_equal(const void *a, const void *b, size_t n);

bool str_ieq(const char *a, size_t alen, const char *b);  /* case-insensitive, b NUL-terminated */
/* Finds a comma-separated token (case-insensitive) in a header value. */
bool header_has_token(const char *v, size_t vlen, const char *token);

/* Parses sizes like "8MiB", "16384", "1GiB", "512k". Returns 0 or -1. */
int parse_size(const char *s, uint64_t *out);
/* Parses a non-negative decimal integer within [0, max]. Returns 0 or -1. */
int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);
/* test hooks: the environment variable `name` as 0..60000 ms (0 when unset or bad) */
uint64_t env_ms(const char *name);

/* mkdir -p with the given mode. Returns 0 or -errno. Blocking: startup only. */
int mkdir_p(const char *path, unsigned mode);

#endif
