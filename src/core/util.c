/* util.c - memory, buffers, time, randomness and small parsers.
 * Everything here is thread-safe except rbuf (loop thread only). */
#include "core/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    char msg[128];
    int len = snprintf(msg, sizeof msg,
                       "{\"level\":\"fatal\",\"msg\":\"out_of_memory\",\"bytes\":%zu}\n", n);
    if (write(2, msg, (size_t)len) < 0) { /* nothing left to do */ }
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (UNLIKELY(!p)) oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (UNLIKELY(!p)) oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (UNLIKELY(!q)) oom(n);
    return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    buf_init(&b);
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return buf_steal(&b, NULL);
}

void buf_init(struct buf *b) { b->data = NULL; b->len = b->cap = 0; }

void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reserve(struct buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(struct buf *b, const void *data, size_t len)
{
    buf_reserve(b, len);
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void buf_puts(struct buf *b, const char *s) { buf_append(b, s, strlen(s)); }

void buf_putc(struct buf *b, char c)
{
    buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    buf_reserve(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        buf_reserve(b, (size_t)n);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    if (n > 0) b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_put_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof tmp;
    do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    buf_append(b, tmp + i, sizeof tmp - (size_t)i);
}

void buf_put_i64(struct buf *b, int64_t v)
{
    if (v < 0) { buf_putc(b, '-'); buf_put_u64(b, (uint64_t)0 - (uint64_t)v); }
    else buf_put_u64(b, (uint64_t)v);
}

char *buf_steal(struct buf *b, size_t *len)
{
    char *p = b->data ? b->data : xstrdup("");
    if (len) *len = b->len;
    buf_init(b);
    return p;
}

struct rbuf *rbuf_new(const void *data, size_t len)
{
    struct rbuf *r = xmalloc(sizeof *r + len + 1);
    r->refs = 1;
    r->len = len;
    if (len) memcpy(r->data, data, len);
    r->data[len] = '\0';
    return r;
}

struct rbuf *rbuf_from_buf(struct buf *b)
{
    struct rbuf *r = rbuf_new(b->data, b->len);
    buf_free(b);
    return r;
}

void rbuf_unref(struct rbuf *r)
{
    if (r && --r->refs == 0) free(r);
}

uint64_t now_ms_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t now_ns_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put2(char *p, unsigned v) { p[0] = (char)('0' + v / 10); p[1] = (char)('0' + v % 10); }

/* Days since 1970-01-01 -> civil date (Howard Hinnant's algorithm): no
 * gmtime_r, no snprintf on the hot path of every entity written. */
size_t fmt_time_ms(char *out, uint64_t ms)
{
    int64_t secs = (int64_t)(ms / 1000);
    int64_t days = secs / 86400;
    unsigned sod = (unsigned)(secs % 86400);
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
    unsigned yy = (unsigned)y, msr = (unsigned)(ms % 1000);
    put2(out, yy / 100);
    put2(out + 2, yy % 100);
    out[4] = '-';
    put2(out + 5, m);
    out[7] = '-';
    put2(out + 8, d);
    out[10] = 'T';
    put2(out + 11, sod / 3600);
    out[13] = ':';
    put2(out + 14, sod / 60 % 60);
    out[16] = ':';
    put2(out + 17, sod % 60);
    out[19] = '.';
    out[20] = (char)('0' + msr / 100);
    put2(out + 21, msr % 100);
    out[23] = 'Z';
    out[24] = '\0';
    return 24;
}

static int digits(const char *s, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* civil date -> days since 1970-01-01 (Howard Hinnant's days_from_civil) */
int parse_time_ms(const char *s, size_t len, uint64_t *out)
{
    unsigned y, m, d, hh, mm, ss, ms;
    if (len != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' ||
        s[23] != 'Z')
        return -1;
    if (digits(s, 4, &y) || digits(s + 5, 2, &m) || digits(s + 8, 2, &d) || digits(s + 11, 2, &hh) ||
        digits(s + 14, 2, &mm) || digits(s + 17, 2, &ss) || digits(s + 20, 3, &ms))
        return -1;
    static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] || (m == 2 && d == 29 && !leap) || hh > 23 ||
        mm > 59 || ss > 59)
        return -1;
    unsigned yy = m <= 2 ? y - 1 : y;
    unsigned era = yy / 400, yoe = yy - era * 400;
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    uint64_t days = (uint64_t)era * 146097 + doe - 719468;
    *out = ((days * 86400 + hh * 3600u + mm * 60u + ss) * 1000) + ms;
    return 0;
}

int write_full(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

void random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void ulid_make(char out[27], uint64_t ms)
{
    unsigned char rnd[10];
    random_bytes(rnd, sizeof rnd);
    for (int i = 9; i >= 0; i--) {           /* 48-bit time, 10 chars */
        out[i] = crockford[ms & 31];
        ms >>= 5;
    }
    /* 80 bits of randomness, 16 chars of 5 bits each */
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 5; i++) hi = (hi << 8) | rnd[i];
    for (int i = 5; i < 10; i++) lo = (lo << 8) | rnd[i];
    for (int i = 0; i < 8; i++) out[10 + i] = crockford[(hi >> (35 - 5 * i)) & 31];
    for (int i = 0; i < 8; i++) out[18 + i] = crockford[(lo >> (35 - 5 * i)) & 31];
    out[26] = '\0';
}

bool ulid_valid(const char *s, size_t len)
{
    if (len != 26) return false;
    if (s[0] > '7') return false;           /* 48-bit timestamp overflow */
    for (size_t i = 0; i < len; i++)
        if (!memchr(crockford, s[i], sizeof crockford - 1)) return false;
    return true;
}

void hex_encode(char *out, const unsigned char *in, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return (n >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;        /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0;       /* surrogates */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;
        if (c == 0xF4 && p[1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

bool ct_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++) d |= x[i] ^ y[i];
    return d == 0;
}

bool str_ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

bool header_has_token(const char *v, size_t vlen, const char *token)
{
    size_t tlen = strlen(token), i = 0;
    while (i < vlen) {
        while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t start = i;
        while (i < vlen && v[i] != ',' && v[i] != ';') i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) end--;
        if (end - start == tlen && strncasecmp(v + start, token, tlen) == 0) {
            /* "gzip;q=0" means not acceptable */
            if (i < vlen && v[i] == ';') {
                size_t j = i + 1;
                while (j < vlen && v[j] == ' ') j++;
                if (j + 2 < vlen + 1 && (v[j] == 'q' || v[j] == 'Q') && j + 1 < vlen && v[j + 1] == '=') {
                    double q = strtod(v + j + 2, NULL);
                    if (q <= 0.0) return false;
                }
            }
            return true;
        }
        while (i < vlen && v[i] != ',') i++;
    }
    return false;
}

int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20) return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

uint64_t env_ms(const char *name)
{
    const char *v = getenv(name);
    uint64_t ms = 0;
    if (!v || parse_u64(v, strlen(v), 60000, &ms) < 0) return 0;
    return ms;
}

int parse_size(const char *s, uint64_t *out)
{
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') n++;
    uint64_t v, mult = 1;
    if (parse_u64(s, n, UINT64_MAX, &v) < 0) return -1;
    const char *u = s + n;
    if (*u == '\0' || strcasecmp(u, "b") == 0) mult = 1;
    else if (strcasecmp(u, "k") == 0 || strcasecmp(u, "kb") == 0 || strcasecmp(u, "kib") == 0) mult = 1ull << 10;
    else if (strcasecmp(u, "m") == 0 || strcasecmp(u, "mb") == 0 || strcasecmp(u, "mib") == 0) mult = 1ull << 20;
    else if (strcasecmp(u, "g") == 0 || strcasecmp(u, "gb") == 0 || strcasecmp(u, "gib") == 0) mult = 1ull << 30;
    else return -1;
    if (v > UINT64_MAX / mult) return -1;
    *out = v * mult;
    return 0;
}

int mkdir_p(const char *path, unsigned mode)
{
    char tmp[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof tmp) return -ENAMETOOLONG;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -errno;
    return 0;
}

/* OpenSSL 3 looks an algorithm up on every EVP_sha256() use unless it is
 * fetched once; for short inputs the lookup costs more than the hash. */
static EVP_MD *g_sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!g_sha256) abort();
}

const struct evp_md_st *sha256_md(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return g_sha256;
}

/* ---- networks ------------------------------------------------------------ */

static bool ip_parse(const char *s, size_t len, int *family, unsigned char addr[16])
{
    char t[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof t) return false;
    memcpy(t, s, len);
    t[len] = '\0';
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, t, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, t, addr) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

bool cidr_parse(const char *s, size_t len, struct cidr *out)
{
    const char *slash = memchr(s, '/', len);
    size_t al = slash ? (size_t)(slash - s) : len;
    if (!ip_parse(s, al, &out->family, out->addr)) return false;
    unsigned max = out->family == AF_INET ? 32 : 128;
    out->bits = max;
    if (slash) {
        uint64_t b;
        if (parse_u64(slash + 1, len - al - 1, max, &b) < 0) return false;
        out->bits = (unsigned)b;
    }
    return true;
}

bool cidr_contains(const struct cidr *nets, int n, int family, const unsigned char *a)
{
    for (int i = 0; i < n; i++) {
        const struct cidr *c = &nets[i];
        if (c->family != family) continue;
        unsigned full = c->bits / 8, rest = c->bits % 8;
        if (memcmp(a, c->addr, full)) continue;
        if (rest && ((a[full] ^ c->addr[full]) & (0xffu << (8 - rest)) & 0xffu)) continue;
        return true;
    }
    return false;
}

bool cidr_match(const struct cidr *nets, int n, const char *ip, size_t len)
{
    int fam;
    unsigned char a[16];
    return n > 0 && ip_parse(ip, len, &fam, a) && cidr_contains(nets, n, fam, a);
}
