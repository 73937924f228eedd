/* spaces.h - the loop thread's registry of spaces.
 *
 * A copy of every space's counters and digest, updated from each committed
 * write batch (writer.c), so /sync/status, the space list and the status
 * page answer from memory in O(1) on the loop thread. Loop thread only.
 */
#ifndef SNAPSYNC_SPACES_H
#define SNAPSYNC_SPACES_H

#include "store/writer.h"

struct spaces;

struct space {
    struct space_stats st;
    char last_snapshot[27];          /* id of the newest completed snapshot, or "" */
    uint64_t last_snapshot_version;  /* its server_version (the schedule skips when unchanged) */
    bool busy;                       /* a snapshot, restore or import of it is running */
    uint64_t changes_seen;           /* for the change rate */
};

struct spaces *spaces_new(void);
void spaces_free(struct spaces *s);          /* NULL: nothing */
/* Inserts, updates or (st->removed) drops a space. */
void spaces_update(struct spaces *s, const struct space_stats *st);
struct space *spaces_get(struct spaces *s, const char *name);
size_t spaces_count(struct spaces *s);
/* Spaces sorted by name; *n set. The array is owned by the registry and
 * valid until the next update. */
struct space **spaces_sorted(struct spaces *s, size_t *n);

#endif
