/* Scanning a bucket from C: write a few keys, then list them with a
 * ringkv_scan, one key at a time (the library fetches pages as needed).
 *
 * Build (from the repository root, after cargo build --release -p ringkv-ffi):
 *   cc -Wall -Wextra -Werror -I ffi/include ffi/examples/scan.c \
 *      target/release/libringkv_ffi.a -lstdc++ -lpthread -ldl -lm -o scan
 * Prints each key; exits 0 when all 10 came back. */
#include <stdio.h>
#include <string.h>

#include "ringkv.h"

#define B(text) (const uint8_t *)(text), strlen(text)

static int fail(const char *what, ringkv_result r) {
  char msg[512];
  size_t len = 0;
  if (ringkv_last_error(msg, sizeof msg, &len) != RINGKV_OK) msg[0] = '\0';
  fprintf(stderr, "%s: %s: %s\n", what, ringkv_result_name(r), msg);
  return 1;
}

int main(void) {
  ringkv_cluster *cluster = NULL;
  ringkv_result r = ringkv_cluster_new(3, RINGKV_TRANSPORT_MEMORY, &cluster);
  if (r != RINGKV_OK) return fail("cluster", r);
  for (int i = 0; i < 10 && r == RINGKV_OK; i++) {
    char key[16];
    snprintf(key, sizeof key, "user-%d", i);
    r = ringkv_cluster_put(cluster, B("users"), B(key), B("{}"), RINGKV_CONSISTENCY_QUORUM);
  }
  if (r != RINGKV_OK) {
    ringkv_cluster_free(cluster);
    return fail("put", r);
  }

  ringkv_scan *scan = NULL;
  /* Pages of 4 keys, read at the bucket's level, within its timeout. */
  r = ringkv_cluster_scan_new(cluster, B("users"), 4, RINGKV_CONSISTENCY_DEFAULT, 0, &scan);
  const uint8_t *key;
  size_t len;
  int done = 0;
  while (r == RINGKV_OK && (r = ringkv_scan_next(scan, &key, &len, &done)) == RINGKV_OK && !done)
    printf("scan: %.*s\n", (int)len, (const char *)key);
  unsigned long listed = (unsigned long)ringkv_scan_count(scan);
  ringkv_scan_free(scan); /* before the cluster */
  ringkv_cluster_free(cluster);
  if (r != RINGKV_OK) return fail("scan", r);
  printf("scan: %lu keys listed\n", listed);
  if (listed != 10) return 1;
  printf("all checks passed\n");
  return 0;
}
