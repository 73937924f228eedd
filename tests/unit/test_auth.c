/* Unit tests: auth.c decision table, tokens, key storage; ratelimit.c. */
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"
#include "svc/auth.h"
#include "core/ratelimit.h"
#include "store/store.h"
#include "core/util.h"

static void test_roles(void)
{
    /* rows: reader, writer, operator, admin; columns: the access classes */
    static const enum route_access acc[] = {ACCESS_PUBLIC, ACCESS_READ, ACCESS_WRITE, ACCESS_OPERATE, ACCESS_ADMIN, ACCESS_METRICS};
    static const int want[4][6] = {
        {1, 1, 0, 0, 0, 0},
        {1, 1, 1, 0, 0, 0},
        {1, 1, 1, 1, 0, 0},
        {1, 1, 1, 1, 1, 1},
    };
    for (int r = 0; r < 4; r++)
        for (int a = 0; a < 6; a++) CHECK_INT(auth_role_allows((enum role)r, acc[a]), want[r][a]);
    enum role ro;
    CHECK_INT(role_parse("operator", &ro), 0);
    CHECK_INT(ro, ROLE_OPERATOR);
    CHECK_INT(role_parse("root", &ro), -1);
    CHECK_INT(role_parse(NULL, &ro), -1);

    struct key k;
    memset(&k, 0, sizeof k);
    k.role = ROLE_WRITER;
    snprintf(k.spaces[k.nspaces++], 64, "alpha");
    CHECK(key_has_space(&k, "alpha"));
    CHECK(!key_has_space(&k, "beta"));
    CHECK(!key_has_space(&k, "alph"));
    k.all_spaces = true;
    CHECK(key_has_space(&k, "beta"));
    k.all_spaces = false;
    k.role = ROLE_ADMIN;
    CHECK(key_has_space(&k, "beta"));            /* admin: every space */
}

static void test_tokens(void)
{
    char a[TOKEN_LEN + 1], b[TOKEN_LEN + 1];
    unsigned char ha[32], hb[32], h2[32];
    token_make(a, ha);
    token_make(b, hb);
    CHECK_INT(strlen(a), TOKEN_LEN);
    CHECK(strncmp(a, "sst_", 4) == 0);
    CHECK(strcmp(a, b) != 0);
    token_hash(a, strlen(a), h2);
    CHECK(memcmp(ha, h2, 32) == 0);
    CHECK(memcmp(ha, hb, 32) != 0);
    for (size_t i = 4; i < TOKEN_LEN; i++)
        CHECK(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", a[i]) != NULL);
}

static void test_key_storage(void)
{
    char dir[] = "/tmp/snapsync-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct store *st;
    char err[256];
    CHECK_INT(store_open(dir, DURABILITY_FULL, &st, err, sizeof err), 0);
    sqlite3 *db = store_startup_db(st);
    char path[256];
    CHECK_INT(auth_bootstrap_admin(db, dir, path, sizeof path, err, sizeof err), 1);
    CHECK_INT(auth_bootstrap_admin(db, dir, path, sizeof path, err, sizeof err), 0);   /* once */
    CHECK_INT(access(path, R_OK), 0);

    struct key k;
    memset(&k, 0, sizeof k);
    k.role = ROLE_READER;
    snprintf(k.spaces[k.nspaces++], 64, "a");
    snprintf(k.spaces[k.nspaces++], 64, "b");
    snprintf(k.name, sizeof k.name, "r");
    char tok[TOKEN_LEN + 1];
    token_make(tok, k.hash);
    CHECK_INT(key_insert(db, &k, err, sizeof err), 0);
    struct key *keys;
    size_t n;
    CHECK_INT(keys_load(db, &keys, &n), 0);
    CHECK_INT(n, 2);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(keys[i].id, k.id)) {
            found = 1;
            CHECK_INT(keys[i].nspaces, 2);
            CHECK_STR(keys[i].spaces[1], "b");
            CHECK(memcmp(keys[i].hash, k.hash, 32) == 0);
            CHECK_INT(keys[i].revoked_at, 0);
        }
    CHECK(found);
    free(keys);
    CHECK_INT(key_revoke_sql(db, k.id, 123, err, sizeof err), 1);
    CHECK_INT(key_revoke_sql(db, k.id, 124, err, sizeof err), 0);     /* already revoked */
    store_close(st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
}

static void test_ratelimit(void)
{
    struct ratelimit rl;
    rl_init(&rl, 3, 60);                /* 3 at once, then one a second */
    uint64_t ra = 0, t = 1000000;
    CHECK(rl_take(&rl, "1.2.3.4", t, &ra));
    CHECK(rl_take(&rl, "1.2.3.4", t, &ra));
    CHECK(rl_take(&rl, "1.2.3.4", t, &ra));
    CHECK(!rl_take(&rl, "1.2.3.4", t, &ra));
    CHECK_INT(ra, 1);
    CHECK(rl_empty(&rl, "1.2.3.4", t, &ra));
    CHECK(rl_take(&rl, "5.6.7.8", t, &ra));      /* other keys unaffected */
    CHECK(!rl_take(&rl, "1.2.3.4", t + 500, &ra));
    CHECK(rl_take(&rl, "1.2.3.4", t + 1000, &ra));   /* refilled */
    CHECK(!rl_empty(&rl, "9.9.9.9", t, &ra));
    /* a flood of distinct keys stays in the fixed table */
    char key[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        rl_take(&rl, key, t + 2000, NULL);
    }
    rl_free(&rl);
}

int main(void)
{
    test_roles();
    test_tokens();
    test_key_storage();
    test_ratelimit();
    TEST_MAIN_END();
}
