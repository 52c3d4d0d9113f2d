/*
 * One thread through the C ABI against running ringkv-node processes:
 * QUORUM puts to a few keys, over and over (each key overwritten many
 * times, as issue [13] found slow), then QUORUM gets of the same keys.
 * Prints the rate of each and the siblings a final get saw.
 *
 * Usage: put_get ADDRS [OPS] [KEYS] [BUCKET] [POLICY]
 *   ADDRS   client addresses, HOST:PORT[,HOST:PORT...]
 *   OPS     puts, and then gets (default 5000)
 *   KEYS    distinct keys they cycle over (default 10)
 *   BUCKET  the bucket (default "default")
 *   POLICY  "lww" or "siblings": set the bucket's policy first (default:
 *           leave it, the node's default, siblings)
 *
 * Build and run against a fresh three-node cluster: bench/c/run.sh.
 * Exits 1 on any failed operation.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringkv.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int failed(const char *what, ringkv_result r) {
  char message[512];
  size_t len = 0;
  if (ringkv_last_error(message, sizeof message, &len) != RINGKV_OK) {
    strcpy(message, "(message too long)");
  }
  fprintf(stderr, "%s: %s: %s\n", what, ringkv_result_name(r), message);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s ADDRS [OPS] [KEYS] [BUCKET] [POLICY]\n", argv[0]);
    return 2;
  }
  long ops = argc > 2 ? strtol(argv[2], NULL, 10) : 5000;
  long keys = argc > 3 ? strtol(argv[3], NULL, 10) : 10;
  const char *bucket = argc > 4 ? argv[4] : "default";
  if (ops <= 0 || keys <= 0) {
    fprintf(stderr, "OPS and KEYS must be positive\n");
    return 2;
  }
  ringkv_client *client = NULL;
  ringkv_result r = ringkv_client_new(argv[1], &client);
  if (r != RINGKV_OK) return failed("connect", r);

  if (argc > 5) {
    uint32_t policy;
    if (strcmp(argv[5], "lww") == 0) {
      policy = RINGKV_POLICY_LWW;
    } else if (strcmp(argv[5], "siblings") == 0) {
      policy = RINGKV_POLICY_SIBLINGS;
    } else {
      fprintf(stderr, "POLICY is lww or siblings\n");
      return 2;
    }
    r = ringkv_client_set_bucket_policy(client, (const uint8_t *)bucket, strlen(bucket),
                                        policy);
    if (r != RINGKV_OK) return failed("set_bucket_policy", r);
    /* The other nodes learn it by gossip. */
    struct timespec second = {1, 0};
    nanosleep(&second, NULL);
  }

  char key[32], value[100];
  memset(value, 'v', sizeof value);
  const uint8_t *b = (const uint8_t *)bucket;
  size_t blen = strlen(bucket);

  double start = now();
  for (long i = 0; i < ops; i++) {
    int klen = snprintf(key, sizeof key, "key-%ld", i % keys);
    snprintf(value, sizeof value, "value %ld", i);
    r = ringkv_client_put(client, b, blen, (const uint8_t *)key, (size_t)klen,
                          (const uint8_t *)value, sizeof value, RINGKV_CONSISTENCY_QUORUM);
    if (r != RINGKV_OK) return failed("put", r);
  }
  double puts = (double)ops / (now() - start);

  start = now();
  long siblings = 0;
  for (long i = 0; i < ops; i++) {
    int klen = snprintf(key, sizeof key, "key-%ld", i % keys);
    ringkv_buf *got = NULL;
    r = ringkv_client_get(client, b, blen, (const uint8_t *)key, (size_t)klen,
                          RINGKV_CONSISTENCY_QUORUM, &got);
    if (r == RINGKV_SIBLINGS) {
      siblings++;
    } else if (r != RINGKV_OK) {
      return failed("get", r);
    }
    ringkv_buf_free(got);
  }
  double gets = (double)ops / (now() - start);

  printf("bucket %s (%s), %ld keys, %ld ops each, one thread, QUORUM\n", bucket,
         argc > 5 ? argv[5] : "default policy", keys, ops);
  printf("puts/s %.0f\ngets/s %.0f\nput/get %.2f\ngets answered with siblings %ld\n", puts,
         gets, puts / gets, siblings);
  ringkv_client_free(client);
  return siblings == 0 ? 0 : 1;
}
