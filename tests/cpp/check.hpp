// The C++ tests' check: CHECK(cond) counts a check, and a failure with its place and text.
// Each test program includes it once.
#ifndef ADAMW_TESTS_CHECK_HPP
#define ADAMW_TESTS_CHECK_HPP

#include <cstdio>

static int checks = 0, failures = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        ++checks;                                                                     \
        if (!(cond)) {                                                                \
            ++failures;                                                               \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
    } while (0)

#endif
