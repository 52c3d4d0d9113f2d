/* Batches from C: write several keys in one request with
 * ringkv_cluster_multi_put, then read them (and one never written) back
 * with ringkv_cluster_multi_get; each key has its own status in the
 * ringkv_batch.
 *
 * Build (from the repository root, after cargo build --release -p ringkv-ffi):
 *   cc -Wall -Wextra -Werror -I ffi/include ffi/examples/batch.c \
 *      target/release/libringkv_ffi.a -lstdc++ -lpthread -ldl -lm -o batch
 * Prints each key's value; exits 0 when all 3 came back and the missing
 * key has none. */
#include <stdio.h>
#include <string.h>

#include "ringkv.h"

#define B(text) (const uint8_t *)(text), strlen(text)
#define Q RINGKV_CONSISTENCY_QUORUM

static int fail(const char *what, ringkv_result r) {
  char msg[512];
  size_t len = 0;
  if (ringkv_last_error(msg, sizeof msg, &len) != RINGKV_OK) msg[0] = '\0';
  fprintf(stderr, "%s: %s: %s\n", what, ringkv_result_name(r), msg);
  return 1;
}

int main(void) {
  const char *names[4] = {"ada", "bob", "cy", "nobody"};
  const char *texts[3] = {"apple", "pear", "plum"};
  const uint8_t *keys[4], *values[3];
  size_t key_lens[4], value_lens[3];
  for (int i = 0; i < 4; i++) {
    keys[i] = (const uint8_t *)names[i];
    key_lens[i] = strlen(names[i]);
  }
  for (int i = 0; i < 3; i++) {
    values[i] = (const uint8_t *)texts[i];
    value_lens[i] = strlen(texts[i]);
  }

  ringkv_cluster *cluster = NULL;
  ringkv_result r = ringkv_cluster_new(3, RINGKV_TRANSPORT_MEMORY, &cluster);
  if (r != RINGKV_OK) return fail("cluster", r);

  /* Three blind writes (no contexts) in one request. */
  ringkv_batch *written = NULL;
  r = ringkv_cluster_multi_put(cluster, B("fruit"), keys, key_lens, values, value_lens, NULL, NULL,
                               3, Q, 0, &written);
  int ok = 0;
  for (size_t i = 0; r == RINGKV_OK && i < ringkv_batch_len(written); i++)
    if (ringkv_batch_status(written, i) == RINGKV_OK) ok++;
  ringkv_batch_free(written);
  if (r != RINGKV_OK || ok != 3) {
    ringkv_cluster_free(cluster);
    return fail("multi_put", r);
  }

  /* Read the three and one never written. */
  ringkv_batch *read = NULL;
  r = ringkv_cluster_multi_get(cluster, B("fruit"), keys, key_lens, 4, Q, 0, &read);
  int found = 0, missing = 0;
  for (size_t i = 0; r == RINGKV_OK && i < ringkv_batch_len(read); i++) {
    const ringkv_object *o = NULL; /* borrowed: freed with the batch */
    ringkv_result item = ringkv_batch_object(read, i, &o);
    if (item != RINGKV_OK) {
      fprintf(stderr, "batch: %s: %s\n", names[i], ringkv_result_name(item));
      continue;
    }
    const uint8_t *data;
    size_t len;
    if (ringkv_object_count(o) == 1 && ringkv_object_value(o, 0, &data, &len) == RINGKV_OK) {
      printf("batch: %s = %.*s\n", names[i], (int)len, (const char *)data);
      found++;
    } else if (ringkv_object_count(o) == 0) {
      printf("batch: %s has no value\n", names[i]);
      missing++;
    }
  }
  ringkv_batch_free(read);
  ringkv_cluster_free(cluster);
  if (r != RINGKV_OK) return fail("multi_get", r);
  if (found != 3 || missing != 1) return 1;
  printf("all checks passed\n");
  return 0;
}
