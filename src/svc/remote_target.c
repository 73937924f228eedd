/* remote_target.c - the remote's configuration and the requests to it:
 * URLs, keys, credentials, the bits of S3 and WebDAV XML we read. */
#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "remote_int.h"

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)

/* A secret's file must be the owner's alone: a key readable by every user
 * of the machine is not a secret. Reads its first line into out. */
static int read_secret(const char *what, const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) < 0) FAIL("cannot read %s %s: %s", what, path, strerror(errno));
    if (st.st_mode & 077) FAIL("%s %s is readable by other users (mode %03o); chmod 600 it", what, path, st.st_mode & 0777);
    FILE *f = fopen(path, "r");
    if (!f) FAIL("cannot read %s %s: %s", what, path, strerror(errno));
    out[0] = '\0';
    if (!fgets(out, (int)cap, f)) out[0] = '\0';
    fclose(f);
    size_t l = strlen(out);
    while (l && (out[l - 1] == '\n' || out[l - 1] == '\r')) out[--l] = '\0';
    if (!l) FAIL("%s %s is empty", what, path);
    return 0;
}

static bool path_ok(const char *p)
{
    for (; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-._~/!$&'()*+,;=:@%", *p)) return false;
    return true;
}

static void trim_slashes(char *s)
{
    size_t l = strlen(s), i = 0;
    while (i < l && s[i] == '/') i++;
    memmove(s, s + i, l - i + 1);
    l = strlen(s);
    while (l && s[l - 1] == '/') s[--l] = '\0';
}

static int config_s3(const struct config *cfg, struct rtarget *t, const char *rest, char *err, size_t errlen)
{
    const char *slash = strchr(rest, '/');
    size_t blen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!blen || blen > 63) FAIL("--remote s3://BUCKET/PREFIX: the bucket name is missing or too long");
    for (size_t i = 0; i < blen; i++)
        if (!islower((unsigned char)rest[i]) && !isdigit((unsigned char)rest[i]) && rest[i] != '-' && rest[i] != '.')
            FAIL("--remote: '%.*s' is not an S3 bucket name (a-z, 0-9, '-', '.')", (int)blen, rest);
    snprintf(t->prefix, sizeof t->prefix, "%s", slash ? slash + 1 : "");
    trim_slashes(t->prefix);
    if (!path_ok(t->prefix)) FAIL("--remote: the prefix has a character a key cannot have here");
    char endpoint[512];
    if (cfg->remote_endpoint[0]) snprintf(endpoint, sizeof endpoint, "%s", cfg->remote_endpoint);
    else snprintf(endpoint, sizeof endpoint, "https://s3.%s.amazonaws.com", cfg->remote_region);
    size_t el = strlen(endpoint);
    while (el && endpoint[el - 1] == '/') endpoint[--el] = '\0';
    if (strncmp(endpoint, "http://", 7) && strncmp(endpoint, "https://", 8))
        FAIL("--remote-endpoint must start with http:// or https://");
    if (strchr(endpoint + 8, '@')) FAIL("--remote-endpoint must not hold credentials (use AWS_ACCESS_KEY_ID or --remote-credentials-file)");
    snprintf(t->base, sizeof t->base, "%s/%.*s", endpoint, (int)blen, rest);
    for (const char *r = cfg->remote_region; *r; r++)
        if (!isalnum((unsigned char)*r) && *r != '-') FAIL("--remote-region '%s' is not a region name", cfg->remote_region);
    snprintf(t->sigv4, sizeof t->sigv4, "aws:amz:%s:s3", cfg->remote_region);
    char cred[600];
    if (cfg->remote_credentials_file[0]) {
        if (read_secret("the credentials file", cfg->remote_credentials_file, cred, sizeof cred, err, errlen) < 0) return -1;
        if (!strchr(cred, ':')) {
            OPENSSL_cleanse(cred, sizeof cred);
            FAIL("the credentials file %s must hold ACCESS_KEY_ID:SECRET_ACCESS_KEY on its first line",
                 cfg->remote_credentials_file);
        }
        snprintf(t->userpwd, sizeof t->userpwd, "%s", cred);
        OPENSSL_cleanse(cred, sizeof cred);
    } else {
        const char *id = getenv("AWS_ACCESS_KEY_ID"), *secret = getenv("AWS_SECRET_ACCESS_KEY");
        if (!id || !*id || !secret || !*secret)
            FAIL("an s3:// --remote needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --remote-credentials-file");
        snprintf(t->userpwd, sizeof t->userpwd, "%s:%s", id, secret);
    }
    snprintf(t->display, sizeof t->display, "s3://%.*s%s%s (%s)", (int)blen, rest, t->prefix[0] ? "/" : "", t->prefix,
             endpoint);
    t->kind = RT_S3;
    return 0;
}

static int config_dav(const struct config *cfg, struct rtarget *t, const char *url, char *err, size_t errlen)
{
    const char *scheme_end = strstr(url, "://");
    const char *auth = scheme_end + 3, *path = strchr(auth, '/');
    size_t alen = path ? (size_t)(path - auth) : strlen(auth);
    const char *at = memchr(auth, '@', alen);
    char user[200] = "";
    if (at) {
        if (memchr(auth, ':', (size_t)(at - auth)))
            FAIL("--remote: put the WebDAV password in --remote-credentials-file, not in the URL");
        snprintf(user, sizeof user, "%.*s", (int)(at - auth), auth);
        alen -= (size_t)(at + 1 - auth);
        auth = at + 1;
    }
    if (!alen) FAIL("--remote: the WebDAV URL has no host");
    for (size_t i = 0; i < alen; i++)
        if (!isalnum((unsigned char)auth[i]) && !strchr("-.:[]_", auth[i])) FAIL("--remote: the WebDAV host is not valid");
    snprintf(t->base, sizeof t->base, "%.*s://%.*s", (int)(scheme_end - url), url, (int)alen, auth);
    snprintf(t->prefix, sizeof t->prefix, "%s", path ? path : "");
    trim_slashes(t->prefix);
    if (!path_ok(t->prefix)) FAIL("--remote: the path has a character a URL path cannot have here");
    if (user[0]) {
        char pw[500];
        if (!cfg->remote_credentials_file[0])
            FAIL("--remote names a WebDAV user: give the password in --remote-credentials-file (mode 0600)");
        if (read_secret("the credentials file", cfg->remote_credentials_file, pw, sizeof pw, err, errlen) < 0) return -1;
        snprintf(t->userpwd, sizeof t->userpwd, "%s:%s", user, pw);
        OPENSSL_cleanse(pw, sizeof pw);
    }
    snprintf(t->display, sizeof t->display, "webdav+%.*s://%s%s%.*s/%s", (int)(scheme_end - url), url, user,
             user[0] ? "@" : "", (int)alen, auth, t->prefix);
    t->kind = RT_DAV;
    return 0;
}

static int config_keys(const struct config *cfg, struct rtarget *t, char *err, size_t errlen)
{
    char list[2048];
    snprintf(list, sizeof list, "%s", cfg->remote_encrypt_to);
    char *save = NULL;
    for (char *tok = strtok_r(list, ", \n", &save); tok; tok = strtok_r(NULL, ", \n", &save)) {
        if (t->nrecipients == AGE_MAX_RECIPIENTS) FAIL("--remote-encrypt-to: at most %d recipients", AGE_MAX_RECIPIENTS);
        if (age_parse_recipient(tok, &t->recipients[t->nrecipients++], err, errlen) < 0) {
            char why[300];
            snprintf(why, sizeof why, "%s", err);
            FAIL("--remote-encrypt-to: %s", why);
        }
    }
    if (cfg->remote_identity[0]) {
        struct stat st;
        if (stat(cfg->remote_identity, &st) == 0 && (st.st_mode & 077))
            FAIL("--remote-identity %s is readable by other users (mode %03o); chmod 600 it", cfg->remote_identity,
                 st.st_mode & 0777);
        int n = age_load_identities(cfg->remote_identity, t->ids, AGE_MAX_RECIPIENTS, err, errlen);
        if (n < 0) {
            char why[400];
            snprintf(why, sizeof why, "%s", err);
            FAIL("--remote-identity: %s", why);
        }
        t->nids = n;
    }
    return 0;
}

int remote_config(const struct config *cfg, struct rtarget *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (!cfg->remote[0]) return 0;
    const char *u = cfg->remote;
    int rc;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '?' || *p == '#')
            FAIL("--remote: the URL has a space, a control character, a query or a fragment");
    if (!strncmp(u, "s3://", 5)) rc = config_s3(cfg, t, u + 5, err, errlen);
    else if (!strncmp(u, "webdav+http://", 14) || !strncmp(u, "webdav+https://", 15)) rc = config_dav(cfg, t, u + 7, err, errlen);
    else FAIL("--remote must be s3://BUCKET/PREFIX or webdav+http(s)://[USER@]HOST[:PORT]/PATH");
    if (rc < 0 || config_keys(cfg, t, err, errlen) < 0) {
        OPENSSL_cleanse(t, sizeof *t);
        return -1;
    }
    char kinds[128];
    snprintf(kinds, sizeof kinds, "%s", cfg->remote_kinds);
    char *save = NULL;
    t->kinds[0] = ',';
    for (char *tok = strtok_r(kinds, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (strcmp(tok, "manual") && strcmp(tok, "scheduled") && strcmp(tok, "pre_restore"))
            FAIL("--remote-kinds: '%s' is not manual, scheduled or pre_restore", tok);
        size_t l = strlen(t->kinds);
        snprintf(t->kinds + l, sizeof t->kinds - l, "%s,", tok);
    }
    t->part_size = cfg->remote_part_size;
    t->keep_scheduled = cfg->remote_keep_scheduled;
    t->keep_pre_restore = cfg->remote_keep_pre_restore;
    t->retry_ms = cfg->remote_retry_ms;
    t->attempts = cfg->remote_attempts;
    t->stall_ms = (long)cfg->remote_timeout_ms;
    return 1;
}
#undef FAIL

void rt_keys(const struct rtarget *t, const char *instance, const char *space, const char *id, bool encrypted,
             char *key, char *mkey, size_t cap)
{
    const char *sep = t->prefix[0] ? "/" : "";
    if (key) snprintf(key, cap, "%s%s%s/%s/%s" RT_DATA_SUFFIX "%s", t->prefix, sep, instance, space, id,
                      encrypted ? RT_AGE_SUFFIX : "");
    if (mkey) snprintf(mkey, cap, "%s%s%s/%s/%s" RT_MANIFEST_SUFFIX, t->prefix, sep, instance, space, id);
}

struct rhttp *rt_request(struct server *srv, const struct rtarget *t, const char *method, const char *key,
                         const char *query, struct rhttp_req *q)
{
    struct buf url;
    buf_init(&url);
    buf_puts(&url, t->base);
    buf_putc(&url, '/');
    rhttp_escape_path(&url, key);
    if (query && *query) {
        buf_putc(&url, '?');
        buf_puts(&url, query);
    }
    /* S3 wants the payload's hash named in a signed header; curl 7.88 signs
     * the one we give. The body's integrity is checked by its ETag (MD5)
     * and the size after the upload. */
    const char *hdrs[16];
    size_t n = 0;
    for (const char *const *p = q->headers; p && *p && n < 14; p++) hdrs[n++] = *p;
    if (t->kind == RT_S3) hdrs[n++] = "x-amz-content-sha256: UNSIGNED-PAYLOAD";
    hdrs[n] = NULL;
    q->headers = hdrs;
    q->method = method;
    q->url = url.data;
    q->userpwd = t->userpwd[0] ? t->userpwd : NULL;
    q->sigv4 = t->kind == RT_S3 ? t->sigv4 : NULL;
    q->stall_ms = t->stall_ms;
    if (!strcmp(method, "HEAD")) q->no_body = true;
    struct rhttp *h = rhttp_start(srv, q);
    buf_free(&url);
    return h;
}

static void xml_unescape(const char *s, size_t n, char *out, size_t cap)
{
    static const struct { const char *ent; char c; } ents[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''},
    };
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < cap;) {
        bool done = false;
        if (s[i] == '&')
            for (size_t k = 0; k < ARRAY_SIZE(ents); k++) {
                size_t el = strlen(ents[k].ent);
                if (i + el <= n && !memcmp(s + i, ents[k].ent, el)) {
                    out[j++] = ents[k].c;
                    i += el;
                    done = true;
                    break;
                }
            }
        if (!done) out[j++] = s[i++];
    }
    out[j] = '\0';
}

int rt_xml_next(const char *xml, size_t len, size_t *pos, const char *tag, char *out, size_t cap)
{
    size_t tl = strlen(tag);
    for (size_t i = *pos; i + tl + 2 < len; i++) {
        if (xml[i] != '<' || xml[i + 1] == '/') continue;
        /* <tag> or <ns:tag> */
        size_t j = i + 1, name = j;
        while (j < len && xml[j] != '>' && xml[j] != ' ' && xml[j] != '/') {
            if (xml[j] == ':') name = j + 1;
            j++;
        }
        if (j - name != tl || memcmp(xml + name, tag, tl)) continue;
        const char *gt = memchr(xml + j, '>', len - j);
        if (!gt) return -1;
        if (gt[-1] == '/') {         /* <tag/> */
            if (cap) out[0] = '\0';
            *pos = (size_t)(gt + 1 - xml);
            return 0;
        }
        size_t start = (size_t)(gt + 1 - xml), k = start;
        while (k < len && xml[k] != '<') k++;
        xml_unescape(xml + start, k - start, out, cap);
        *pos = k;
        return 0;
    }
    return -1;
}

void rt_query_escape(struct buf *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') buf_putc(out, (char)*p);
        else buf_printf(out, "%%%02X", *p);
    }
}

bool rt_transient(int status)
{
    return status == 0 || status == 408 || status == 429 || (status >= 500 && status != 501 && status != 505);
}

void rt_status_msg(char *out, size_t cap, const char *what, int status, const char *error)
{
    if (!status) {
        snprintf(out, cap, "%s: the remote did not answer (%s)", what, error ? error : "no response");
        return;
    }
    const char *why = status == 401   ? "the remote refused the credentials (401 Unauthorized)"
                      : status == 403 ? "the remote refused access (403 Forbidden): check the credentials and the bucket's or directory's permissions"
                      : status == 404 ? "the remote has no such bucket or directory (404 Not Found)"
                      : status == 507 ? "the remote is out of space (507 Insufficient Storage)"
                      : status == 413 ? "the remote refused the size (413 Payload Too Large)"
                                      : NULL;
    if (why) snprintf(out, cap, "%s: %s", what, why);
    else snprintf(out, cap, "%s: the remote answered %d", what, status);
}
