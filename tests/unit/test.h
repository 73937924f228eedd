/* test.h - tiny assertion macros that print both sides (libuv style). */
#ifndef SNAPSYNC_TEST_H
#define SNAPSYNC_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;
static int test_checks;

#define CHECK(cond) do { test_checks++; if (!(cond)) { \
    fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); test_failures++; } } while (0)
#define CHECK_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); test_checks++; \
    if (_a != _b) { fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
        #a, #b, _a, _b); test_failures++; } } while (0)
#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); test_checks++; \
    if (!_a || !_b || strcmp(_a, _b)) { fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", \
        __FILE__, __LINE__, #a, #b, _a ? _a : "(null)", _b ? _b : "(null)"); test_failures++; } } while (0)

#define TEST_MAIN_END() do { \
    printf("%d checks, %d failures\n", test_checks, test_failures); \
    return test_failures ? 1 : 0; } while (0)

#endif
