/* Embedded clusters with options (issue [16]): a data directory and an
 * engine, so that data survives freeing the cluster and making it again
 * on the same directory; and the setters' misuse. The directory is
 * argv[1] (the test makes a fresh one). Prints "persist: all checks
 * passed" and exits 0 only when every check holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ringkv.h"

#define KEYS 50
#define Q RINGKV_CONSISTENCY_QUORUM

/* Makes a 3-node cluster on `dir` with `engine`; NULL on failure. */
static ringkv_cluster *open_on(const char *dir, uint32_t engine) {
  ringkv_cluster_options *opts = NULL;
  ringkv_cluster *cluster = NULL;
  EXPECT(ringkv_cluster_options_new(&opts), RINGKV_OK);
  EXPECT(ringkv_cluster_options_set_data_dir(opts, dir), RINGKV_OK);
  EXPECT(ringkv_cluster_options_set_engine(opts, engine), RINGKV_OK);
  EXPECT(ringkv_cluster_options_set_vnodes(opts, 16), RINGKV_OK);
  EXPECT(ringkv_cluster_new_with(3, RINGKV_TRANSPORT_MEMORY, opts, &cluster), RINGKV_OK);
  ringkv_cluster_options_free(opts); /* the cluster keeps its own copy */
  return cluster;
}

static void round_trip(const char *dir, uint32_t engine, const char *name) {
  ringkv_cluster *cluster = open_on(dir, engine);
  if (cluster == NULL) return;
  for (int i = 0; i < KEYS; i++) {
    char key[16], value[16];
    snprintf(key, sizeof key, "k%d", i);
    snprintf(value, sizeof value, "v%d", i);
    EXPECT(ringkv_cluster_put(cluster, S("kept"), S(key), S(value), Q), RINGKV_OK);
  }
  ringkv_cluster_free(cluster);

  cluster = open_on(dir, engine);
  if (cluster == NULL) return;
  int found = 0;
  for (int i = 0; i < KEYS; i++) {
    char key[16], value[16];
    snprintf(key, sizeof key, "k%d", i);
    snprintf(value, sizeof value, "v%d", i);
    ringkv_buf *got = NULL;
    ringkv_result r = ringkv_cluster_get(cluster, S("kept"), S(key), Q, &got);
    if (r == RINGKV_OK && ringkv_buf_len(got) == strlen(value) &&
        memcmp(ringkv_buf_data(got), value, strlen(value)) == 0)
      found++;
    else
      fprintf(stderr, "%s: get %s after reopening: %s: %s\n", name, key, ringkv_result_name(r),
              last_error());
    ringkv_buf_free(got);
  }
  CHECK(found == KEYS);
  printf("persist: %s: %d of %d keys after reopening\n", name, found, KEYS);
  ringkv_cluster_free(cluster);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: persist DIR\n");
    return 2;
  }
  char lsm[1024], btree[1024], mem[1024];
  snprintf(lsm, sizeof lsm, "%s/lsm", argv[1]);
  snprintf(btree, sizeof btree, "%s/btree", argv[1]);
  snprintf(mem, sizeof mem, "%s/memory", argv[1]);
  round_trip(lsm, RINGKV_ENGINE_LSM, "lsm");
  round_trip(btree, RINGKV_ENGINE_BTREE, "btree");

  /* Misuse. */
  ringkv_cluster_options *opts = NULL;
  EXPECT(ringkv_cluster_options_new(NULL), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_cluster_options_new: out is NULL") == 0);
  EXPECT(ringkv_cluster_options_set_data_dir(NULL, "x"), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_cluster_options_set_data_dir: options is NULL") == 0);
  EXPECT(ringkv_cluster_options_set_engine(NULL, 1), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_vnodes(NULL, 1), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_options_new(&opts), RINGKV_OK);
  EXPECT(ringkv_cluster_options_set_data_dir(opts, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_data_dir(opts, ""), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_engine(opts, 3), RINGKV_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "engine 3") != NULL);
  EXPECT(ringkv_cluster_options_set_vnodes(opts, 0), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_vnodes(opts, RINGKV_MAX_VNODES + 1), RINGKV_INVALID_ARGUMENT);
  ringkv_cluster *cluster = NULL;
  EXPECT(ringkv_cluster_new_with(3, RINGKV_TRANSPORT_MEMORY, opts, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_new_with(0, RINGKV_TRANSPORT_MEMORY, opts, &cluster),
         RINGKV_INVALID_ARGUMENT);
  CHECK(strncmp(last_error(), "ringkv_cluster_new_with: ", 25) == 0);
  EXPECT(ringkv_cluster_new_with(1, 9, opts, &cluster), RINGKV_INVALID_ARGUMENT);
  /* A directory with the memory engine keeps nothing: refused. */
  EXPECT(ringkv_cluster_options_set_data_dir(opts, mem), RINGKV_OK);
  EXPECT(ringkv_cluster_options_set_engine(opts, RINGKV_ENGINE_MEMORY), RINGKV_OK);
  EXPECT(ringkv_cluster_new_with(1, RINGKV_TRANSPORT_MEMORY, opts, &cluster),
         RINGKV_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "needs the LSM or B-tree engine") != NULL);
  CHECK(cluster == NULL);
  ringkv_cluster_options_free(opts);
  ringkv_cluster_options_free(NULL);
  /* Default replicas and levels: n = 1, so TWO cannot be met. */
  EXPECT(ringkv_cluster_options_new(&opts), RINGKV_OK);
  EXPECT(ringkv_cluster_options_set_replicas(NULL, 1, 1, 1), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_replicas(opts, 0, 1, 1), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_replicas(opts, 6, 1, 1), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_replicas(opts, 1, RINGKV_CONSISTENCY_DEFAULT, 1),
         RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_replicas(opts, 1, 1, 9), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_replicas(opts, 1, RINGKV_CONSISTENCY_TWO, 1),
         RINGKV_INVALID_ARGUMENT);
  CHECK(strncmp(last_error(), "ringkv_cluster_options_set_replicas: ", 37) == 0);
  EXPECT(ringkv_cluster_options_set_replicas(opts, 4, RINGKV_CONSISTENCY_QUORUM,
                                             RINGKV_CONSISTENCY_QUORUM),
         RINGKV_OK);
  EXPECT(ringkv_cluster_new_with(3, RINGKV_TRANSPORT_MEMORY, opts, &cluster),
         RINGKV_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "needs at least 4 nodes") != NULL);
  EXPECT(ringkv_cluster_options_set_replicas(opts, 1, RINGKV_CONSISTENCY_ONE,
                                             RINGKV_CONSISTENCY_ONE),
         RINGKV_OK);
  EXPECT(ringkv_cluster_new_with(3, RINGKV_TRANSPORT_MEMORY, opts, &cluster), RINGKV_OK);
  ringkv_cluster_options_free(opts);
  if (cluster != NULL) {
    EXPECT(ringkv_cluster_put(cluster, S("b"), S("k"), S("v"), RINGKV_CONSISTENCY_DEFAULT),
           RINGKV_OK);
    EXPECT(ringkv_cluster_put(cluster, S("b"), S("k"), S("v"), RINGKV_CONSISTENCY_TWO),
           RINGKV_INVALID_ARGUMENT);
    ringkv_cluster_free(cluster);
    cluster = NULL;
    printf("persist: one replica per key: TWO refused\n");
  }

  /* The default policy: LWW leaves one value of two blind writes, where
   * the default (siblings) keeps both. */
  for (int lww = 0; lww <= 1; lww++) {
    EXPECT(ringkv_cluster_options_new(&opts), RINGKV_OK);
    if (lww) {
      EXPECT(ringkv_cluster_options_set_policy(NULL, RINGKV_POLICY_LWW), RINGKV_NULL_ARGUMENT);
      EXPECT(ringkv_cluster_options_set_policy(opts, 99), RINGKV_INVALID_ARGUMENT);
      CHECK(strncmp(last_error(), "ringkv_cluster_options_set_policy: ", 35) == 0);
      EXPECT(ringkv_cluster_options_set_policy(opts, RINGKV_POLICY_LWW), RINGKV_OK);
    }
    EXPECT(ringkv_cluster_new_with(3, RINGKV_TRANSPORT_MEMORY, opts, &cluster), RINGKV_OK);
    ringkv_cluster_options_free(opts);
    if (cluster == NULL) continue;
    ringkv_object *o = NULL;
    EXPECT(ringkv_cluster_put_ctx(cluster, S("p"), S("k"), S("one"), NULL, 0,
                                  RINGKV_CONSISTENCY_QUORUM, 0, NULL),
           RINGKV_OK);
    EXPECT(ringkv_cluster_put_ctx(cluster, S("p"), S("k"), S("two"), NULL, 0,
                                  RINGKV_CONSISTENCY_QUORUM, 0, NULL),
           RINGKV_OK);
    EXPECT(ringkv_cluster_get_object(cluster, S("p"), S("k"), RINGKV_CONSISTENCY_QUORUM, 0, &o),
           RINGKV_OK);
    size_t values = ringkv_object_count(o);
    CHECK(values == (lww ? 1u : 2u));
    printf("persist: %s: two blind writes = %zu value(s)\n", lww ? "lww" : "siblings", values);
    ringkv_object_free(o);
    ringkv_cluster_free(cluster);
    cluster = NULL;
  }

  /* NULL options are the defaults. */
  EXPECT(ringkv_cluster_new_with(1, RINGKV_TRANSPORT_MEMORY, NULL, &cluster), RINGKV_OK);
  EXPECT(ringkv_cluster_put(cluster, S("b"), S("k"), S("v"), 0), RINGKV_OK);
  ringkv_cluster_free(cluster);

  if (failures != 0) {
    fprintf(stderr, "persist: %d checks failed\n", failures);
    return 1;
  }
  printf("persist: all checks passed\n");
  return 0;
}
