/* spaces.c - see spaces.h. A sorted array: spaces are few and change
 * rarely, lookups are a binary search. Loop thread only. */
#include "store/spaces.h"

#include <stdlib.h>
#include <string.h>

struct spaces {
    struct space **v;
    size_t n, cap;
};

struct spaces *spaces_new(void) { return xcalloc(1, sizeof(struct spaces)); }

void spaces_free(struct spaces *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    free(s);
}

/* index of name, or of where it would go (found = false) */
static size_t find(struct spaces *s, const char *name, bool *found)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->v[mid]->st.name, name);
        if (c == 0) { *found = true; return mid; }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = false;
    return lo;
}

void spaces_update(struct spaces *s, const struct space_stats *st)
{
    bool found;
    size_t i = find(s, st->name, &found);
    if (st->removed) {
        if (!found) return;
        free(s->v[i]);
        memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof *s->v);
        s->n--;
        return;
    }
    if (found && strcmp(s->v[i]->st.uid, st->uid) == 0) {
        s->v[i]->st = *st;
        return;
    }
    if (found) {                     /* deleted and made again: a new space */
        struct space *sp = s->v[i];
        bool busy = sp->busy;
        memset(sp, 0, sizeof *sp);
        sp->st = *st;
        sp->busy = busy;
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof *s->v);
    struct space *sp = xcalloc(1, sizeof *sp);
    sp->st = *st;
    s->v[i] = sp;
    s->n++;
}

struct space *spaces_get(struct spaces *sp, const char *name)
{
    bool found;
    size_t i = find(sp, name, &found);
    return found ? sp->v[i] : NULL;
}

size_t spaces_count(struct spaces *sp) { return sp->n; }

struct space **spaces_sorted(struct spaces *sp, size_t *n)
{
    *n = sp->n;
    return sp->v;
}
