/* remote_int.h - what remote.c, remote_target.c and remote_fetch.c share
 * (not part of the engine's interface: see include/svc/remote.h). */
#ifndef SNAPSYNC_REMOTE_INT_H
#define SNAPSYNC_REMOTE_INT_H

#include "net/remote_http.h"
#include "svc/remote.h"

#define RT_DATA_SUFFIX ".ndjson.gz"
#define RT_AGE_SUFFIX ".age"
#define RT_MANIFEST_SUFFIX ".manifest.json"
#define RT_MANIFEST_FORMAT "snapsync.remote.v1"
#define RT_MAX_MANIFEST (256u << 10)

/* A request to the remote: key "" for the bucket / the collection at the
 * prefix itself; query "" or "a=b&c=d" (already escaped). Fills url, auth,
 * signing and the stall timeout into a copy of q and starts it. */
struct rhttp *rt_request(struct server *srv, const struct rtarget *t, const char *method, const char *key,
                         const char *query, struct rhttp_req *q);
/* The object keys of a snapshot (prefix/instance/space/id + suffixes). */
void rt_keys(const struct rtarget *t, const char *instance, const char *space, const char *id, bool encrypted,
             char *key, char *mkey, size_t cap);
/* Text of the first <tag>...</tag> at or after *pos in xml (entities
 * &amp; &lt; &gt; &quot; &apos; decoded) into out; *pos moves past it.
 * The tag may carry a namespace prefix (<D:href>). 0, or -1 when absent. */
int rt_xml_next(const char *xml, size_t len, size_t *pos, const char *tag, char *out, size_t cap);
/* A query value escaped as SigV4's canonical form wants it (everything
 * but A-Z a-z 0-9 - _ . ~ as %XX, '/' included). */
void rt_query_escape(struct buf *out, const char *s);
/* Is this answer worth another try (5xx, 408, 429, no answer)? */
bool rt_transient(int status);
/* "the remote refused the credentials (403 Forbidden)" and the like: a
 * plain sentence for a status, never echoing what was sent. */
void rt_status_msg(char *out, size_t cap, const char *what, int status, const char *error);

#endif
