/*
 * The checks the C test programs share: each failed check prints its
 * line and what it saw, and counts in `failures`; a program exits 0 only
 * when `failures` is 0. Included once per program (C or C++).
 */
#ifndef RINGKV_TEST_CHECK_H
#define RINGKV_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "ringkv.h"

static int failures = 0;

/* A string literal as a (pointer, length) pair of bytes. */
#define S(text) (const uint8_t *)(text), strlen(text)

/* This thread's last error, or "" when it does not fit. */
static const char *last_error(void) {
  static char message[1024];
  size_t len = 0;
  if (ringkv_last_error(message, sizeof message, &len) != RINGKV_OK) {
    return "";
  }
  return message;
}

#define EXPECT(call, want)                                                       \
  do {                                                                           \
    ringkv_result got_ = (call);                                                 \
    if (got_ != (want)) {                                                        \
      failures++;                                                                \
      fprintf(stderr, "FAILED line %d: %s gave %s (%s), want %s\n", __LINE__,  \
              #call, ringkv_result_name(got_), last_error(),                     \
              ringkv_result_name(want));                                         \
    }                                                                            \
  } while (0)

#define CHECK(cond)                                             \
  do {                                                          \
    if (!(cond)) {                                              \
      failures++;                                               \
      fprintf(stderr, "FAILED line %d: %s\n", __LINE__, #cond); \
    }                                                           \
  } while (0)

#endif
