/* bench/writes/fsync_lat.c - fsync latency of the filesystem under DIR.
 *
 *   cc -O2 -o fsync_lat fsync_lat.c
 *   fsync_lat DIR [COUNT=1000] [MAX_SECONDS=10]
 *
 * Two loops on a file DIR/fsync-probe.<pid> (removed at the end), each
 * COUNT iterations or MAX_SECONDS, whichever ends first:
 *   overwrite: pwrite 4 KiB at a rotating offset inside a preallocated
 *              1 MiB file, then fdatasync - what a WAL commit costs once the
 *              log is being reused (SQLite syncs the WAL with fdatasync);
 *   append:    write 4 KiB at the end of a growing file, then fsync - a
 *              commit that also changes the file's size (a fresh WAL).
 * Prints one JSON line per loop with n, median, p90, p99 and max in
 * microseconds. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p)
{
    int i = (int)(p * (n - 1) + 0.5);
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static void report(const char *name, double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    printf("{\"loop\":\"%s\",\"n\":%d,\"median_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n", name, n,
           pct(v, n, 0.5), pct(v, n, 0.9), pct(v, n, 0.99), v[n - 1]);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fsync_lat DIR [COUNT] [MAX_SECONDS]\n");
        return 2;
    }
    int count = argc > 2 ? atoi(argv[2]) : 1000;
    double max_s = argc > 3 ? atof(argv[3]) : 10;
    if (count < 1 || count > 1000000 || max_s <= 0) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/fsync-probe.%d", argv[1], (int)getpid());
    double *lat = calloc((size_t)count, sizeof *lat);
    static char buf[4096];
    memset(buf, 'x', sizeof buf);

    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !lat) { perror(path); return 1; }
    for (int i = 0; i < 256; i++)
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) { perror("write"); return 1; }
    if (fsync(fd) < 0) { perror("fsync"); return 1; }

    int n = 0;
    double start = now_us();
    for (; n < count && now_us() - start < max_s * 1e6; n++) {
        buf[0] = (char)('a' + n % 26);
        double t = now_us();
        if (pwrite(fd, buf, sizeof buf, (off_t)(n % 256) * 4096) != (ssize_t)sizeof buf) { perror("pwrite"); return 1; }
        if (fdatasync(fd) < 0) { perror("fdatasync"); return 1; }
        lat[n] = now_us() - t;
    }
    report("overwrite+fdatasync", lat, n);

    if (ftruncate(fd, 0) < 0 || fsync(fd) < 0) { perror("ftruncate"); return 1; }
    n = 0;
    start = now_us();
    for (; n < count && now_us() - start < max_s * 1e6; n++) {
        double t = now_us();
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) { perror("write"); return 1; }
        if (fsync(fd) < 0) { perror("fsync"); return 1; }
        lat[n] = now_us() - t;
    }
    report("append+fsync", lat, n);
    close(fd);
    unlink(path);
    free(lat);
    return 0;
}
