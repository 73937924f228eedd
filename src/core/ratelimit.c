/* ratelimit.c - see ratelimit.h. Open addressing over 8 probes; the stalest
 * probed slot is replaced when none matches. */
#include "core/ratelimit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define PROBES 8

void rl_init(struct ratelimit *rl, double burst, double per_minute)
{
    rl->burst = burst;
    rl->per_ms = per_minute / 60000.0;
    rl->slots = xcalloc(RL_SLOTS, sizeof *rl->slots);
}

void rl_free(struct ratelimit *rl)
{
    free(rl->slots);
    rl->slots = NULL;
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct rl_slot *slot(struct ratelimit *rl, const char *key, uint64_t now)
{
    uint64_t h = hash(key);
    struct rl_slot *stalest = NULL;
    for (int i = 0; i < PROBES; i++) {
        struct rl_slot *s = &rl->slots[(h + (uint64_t)i) % RL_SLOTS];
        if (s->key[0] && !strcmp(s->key, key)) {
            s->tokens = fmin(rl->burst, s->tokens + (double)(now - s->last_ms) * rl->per_ms);
            s->last_ms = now;
            return s;
        }
        if (!stalest || !s->key[0] || (stalest->key[0] && s->last_ms < stalest->last_ms)) stalest = s;
    }
    snprintf(stalest->key, sizeof stalest->key, "%s", key);
    stalest->tokens = rl->burst;
    stalest->last_ms = now;
    return stalest;
}

static uint64_t wait_s(struct ratelimit *rl, double tokens)
{
    if (rl->per_ms <= 0) return 60;
    double ms = (1.0 - tokens) / rl->per_ms;
    uint64_t s = (uint64_t)ceil(ms / 1000.0);
    return s ? s : 1;
}

bool rl_take(struct ratelimit *rl, const char *key, uint64_t now_ms, uint64_t *retry_after_s)
{
    struct rl_slot *s = slot(rl, key, now_ms);
    if (s->tokens >= 1.0) {
        s->tokens -= 1.0;
        return true;
    }
    if (retry_after_s) *retry_after_s = wait_s(rl, s->tokens);
    return false;
}

bool rl_empty(struct ratelimit *rl, const char *key, uint64_t now_ms, uint64_t *retry_after_s)
{
    struct rl_slot *s = slot(rl, key, now_ms);
    if (s->tokens >= 1.0) return false;
    if (retry_after_s) *retry_after_s = wait_s(rl, s->tokens);
    return true;
}
