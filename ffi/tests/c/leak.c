/*
 * Leaks library buffers on purpose: tests/it/c_misuse.rs checks that
 * LeakSanitizer reports them, which shows that the clean runs of the
 * examples and of misuse.c really were checked for leaks.
 */
#include <stdio.h>

#include "ringkv.h"

static void leak_buffers(const ringkv_cluster *cluster) {
  for (int i = 0; i < 10; i++) {
    ringkv_buf *addrs = NULL;
    if (ringkv_cluster_client_addrs(cluster, &addrs) != RINGKV_OK) {
      fprintf(stderr, "ringkv_cluster_client_addrs failed\n");
    }
  }
}

int main(void) {
  ringkv_cluster *cluster = NULL;
  if (ringkv_cluster_new(1, RINGKV_TRANSPORT_MEMORY, &cluster) != RINGKV_OK) {
    return 2;
  }
  leak_buffers(cluster);
  ringkv_cluster_free(cluster);
  printf("leaked 10 buffers\n");
  return 0;
}
