/* store.h - the SQLite database in the data directory.
 *
 * Opened once at startup on the main thread (before the loop runs):
 * WAL mode, schema migrations applied in order inside a transaction, and
 * the instance id made once and kept in the meta table. After that, SQL
 * only ever runs on worker threads: one writer connection owned by the
 * writer path, and read connections handed out to reading jobs from a
 * small pool (store_reader_get/put are thread-safe).
 */
#ifndef SNAPSYNC_STORE_H
#define SNAPSYNC_STORE_H

#include <sqlite3.h>
#include <stdint.h>

#include "core/cli.h"

struct store;

/* Returns 0, or -1 with a message in err. Blocking: startup only. */
int store_open(const char *data_dir, enum durability durability, struct store **out, char *err, size_t errlen);
void store_close(struct store *st);

const char *store_instance_id(const struct store *st);
const char *store_db_path(const struct store *st);
int store_schema_version(const struct store *st);
/* Counts read at open (later kept current by the writer's completions). */
uint64_t store_space_count(const struct store *st);

/* The read-write connection used at startup (main thread, before the loop
 * runs and before the writer starts): CLI commands and bootstrap only. */
sqlite3 *store_startup_db(struct store *st);

/* Read connections for worker threads (WAL: readers never block writers). */
sqlite3 *store_reader_get(struct store *st);
void store_reader_put(struct store *st, sqlite3 *db);
/* A space's version as this connection's transaction sees it: 1 found, 0 no
 * such space, -1 SQL error. */
int store_space_version(sqlite3 *db, int64_t space_id, uint64_t *out);

/* The read side's state (store/read.h), kept with the store it reads. */
struct read_side;
struct read_side *store_read_side(struct store *st);

/* Opens a connection with the project's pragmas. Worker threads or startup. */
int store_connect(const char *path, bool readonly, enum durability durability, sqlite3 **out, char *err,
                  size_t errlen);

#endif
