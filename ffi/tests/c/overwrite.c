/* Puts and deletes from C replace what they read, under the default policy
 * (SIBLINGS) too: issue [13]. Before, every put was blind, so the object
 * of a key put N times held N siblings, a get answered RINGKV_SIBLINGS
 * from the second put on, the 101st put was refused (TooManySiblings, as
 * RINGKV_SIBLINGS), and a delete left the values beside its tombstone.
 *
 * Runs on an embedded 3-node cluster over TCP, through the cluster handle
 * and through a client connection to its nodes' client ports; prints
 * "overwrite: all checks passed" and exits 0 only when every check holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ringkv.h"

#define PUTS 150 /* more than the default sibling cap, 100 */

typedef ringkv_result (*put_fn)(const void *, const uint8_t *, size_t, const uint8_t *,
                                size_t, const uint8_t *, size_t, uint32_t);
typedef ringkv_result (*get_fn)(const void *, const uint8_t *, size_t, const uint8_t *,
                                size_t, uint32_t, ringkv_buf **);
typedef ringkv_result (*del_fn)(const void *, const uint8_t *, size_t, const uint8_t *,
                                size_t, uint32_t);

static ringkv_result cluster_put(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                                 size_t kl, const uint8_t *v, size_t vl, uint32_t w) {
  return ringkv_cluster_put(h, b, bl, k, kl, v, vl, w);
}
static ringkv_result cluster_get(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                                 size_t kl, uint32_t r, ringkv_buf **out) {
  return ringkv_cluster_get(h, b, bl, k, kl, r, out);
}
static ringkv_result cluster_del(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                                 size_t kl, uint32_t w) {
  return ringkv_cluster_delete(h, b, bl, k, kl, w);
}
static ringkv_result client_put(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                                size_t kl, const uint8_t *v, size_t vl, uint32_t w) {
  return ringkv_client_put(h, b, bl, k, kl, v, vl, w);
}
static ringkv_result client_get(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                                size_t kl, uint32_t r, ringkv_buf **out) {
  return ringkv_client_get(h, b, bl, k, kl, r, out);
}
static ringkv_result client_del(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                                size_t kl, uint32_t w) {
  return ringkv_client_delete(h, b, bl, k, kl, w);
}

static void say_error(const char *what, ringkv_result r) {
  char msg[512];
  size_t len = 0;
  if (ringkv_last_error(msg, sizeof msg, &len) != RINGKV_OK) msg[0] = '\0';
  fprintf(stderr, "%s: %s: %s\n", what, ringkv_result_name(r), msg);
}

/* Whether `bucket`/`key` reads as exactly `want` at QUORUM. */
static int reads_as(const void *h, get_fn get, const char *bucket, const char *key,
                    const char *want) {
  ringkv_buf *value = NULL;
  ringkv_result r = get(h, (const uint8_t *)bucket, strlen(bucket), (const uint8_t *)key,
                        strlen(key), RINGKV_CONSISTENCY_QUORUM, &value);
  if (r != RINGKV_OK) {
    say_error("get", r);
    return 0;
  }
  int same = ringkv_buf_len(value) == strlen(want) &&
             memcmp(ringkv_buf_data(value), want, strlen(want)) == 0;
  if (!same) fprintf(stderr, "get %s/%s: got %s, want %s\n", bucket, key,
                     (const char *)ringkv_buf_data(value), want);
  ringkv_buf_free(value);
  return same;
}

static void overwrites(const char *name, const void *h, put_fn put, get_fn get, del_fn del,
                       const char *bucket) {
  const char *key = "k";
  char value[64];
  int failed_puts = 0;
  /* One key, put again and again, as a C caller overwrites a value. */
  for (int i = 0; i < PUTS; i++) {
    snprintf(value, sizeof value, "value %d", i);
    ringkv_result r = put(h, (const uint8_t *)bucket, strlen(bucket), (const uint8_t *)key,
                          strlen(key), (const uint8_t *)value, strlen(value),
                          RINGKV_CONSISTENCY_QUORUM);
    if (r != RINGKV_OK && failed_puts++ == 0) {
      fprintf(stderr, "%s: put %d: ", name, i);
      say_error("put", r);
    }
    /* After the second put, the key holds the one value put last. */
    if (i == 1) CHECK(reads_as(h, get, bucket, key, value));
  }
  CHECK(failed_puts == 0);
  CHECK(reads_as(h, get, bucket, key, value));
  printf("%s: %d puts of one key, get = %s\n", name, PUTS, value);

  ringkv_result r;
  r = del(h, (const uint8_t *)bucket, strlen(bucket), (const uint8_t *)key,
                        strlen(key), RINGKV_CONSISTENCY_QUORUM);
  EXPECT(r, RINGKV_OK);
  ringkv_buf *gone = NULL;
  r = get(h, (const uint8_t *)bucket, strlen(bucket), (const uint8_t *)key, strlen(key),
          RINGKV_CONSISTENCY_QUORUM, &gone);
  EXPECT(r, RINGKV_NOT_FOUND);
  ringkv_buf_free(gone);
  printf("%s: get after delete = %s\n", name, ringkv_result_name(r));

  r = put(h, (const uint8_t *)bucket, strlen(bucket), (const uint8_t *)key, strlen(key),
          (const uint8_t *)"again", 5, RINGKV_CONSISTENCY_DEFAULT);
  EXPECT(r, RINGKV_OK);
  CHECK(reads_as(h, get, bucket, key, "again"));
}

int main(void) {
  ringkv_cluster *cluster = NULL;
  ringkv_result r = ringkv_cluster_new(3, RINGKV_TRANSPORT_TCP, &cluster);
  if (r != RINGKV_OK) {
    say_error("cluster_new", r);
    return 1;
  }
  overwrites("cluster", cluster, cluster_put, cluster_get, cluster_del, "plain");

  ringkv_buf *addrs = NULL;
  EXPECT(ringkv_cluster_client_addrs(cluster, &addrs), RINGKV_OK);
  ringkv_client *client = NULL;
  r = ringkv_client_new((const char *)ringkv_buf_data(addrs), &client);
  ringkv_buf_free(addrs);
  if (r != RINGKV_OK) {
    say_error("client_new", r);
  } else {
    overwrites("client", client, client_put, client_get, client_del, "plain-too");
    /* A bucket turned LWW (the put then skips the read) overwrites too. */
    EXPECT(ringkv_client_set_bucket_policy(client, S("lww"), RINGKV_POLICY_LWW), RINGKV_OK);
    overwrites("client lww", client, client_put, client_get, client_del, "lww");
  }
  ringkv_client_free(client);
  ringkv_cluster_free(cluster);
  if (failures != 0) {
    fprintf(stderr, "overwrite: %d checks failed\n", failures);
    return 1;
  }
  printf("overwrite: all checks passed\n");
  return 0;
}
