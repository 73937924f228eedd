/* ratelimit.h - token buckets keyed by a short string (client address,
 * key id + space), in a fixed-size table: memory is bounded whatever the
 * number of clients. A full table replaces the stalest slot, which can only
 * make a limit more lenient for a forgotten client, never stricter.
 * Single-threaded (loop thread). */
#ifndef SNAPSYNC_RATELIMIT_H
#define SNAPSYNC_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#define RL_SLOTS 4096
#define RL_KEY 96

struct rl_slot {
    char key[RL_KEY];
    double tokens;
    uint64_t last_ms;
};

struct ratelimit {
    double burst;                    /* bucket size */
    double per_ms;                   /* refill rate */
    struct rl_slot *slots;
};

/* burst tokens, refilled at `per_minute` tokens per minute. */
void rl_init(struct ratelimit *rl, double burst, double per_minute);
void rl_free(struct ratelimit *rl);
/* Takes one token. Returns true if allowed; otherwise false and the
 * seconds until a token is back in *retry_after_s. */
bool rl_take(struct ratelimit *rl, const char *key, uint64_t now_ms, uint64_t *retry_after_s);
/* True if key has no token left (does not take one). */
bool rl_empty(struct ratelimit *rl, const char *key, uint64_t now_ms, uint64_t *retry_after_s);

#endif
