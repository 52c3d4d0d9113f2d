/*
 * Read-your-writes per thread on an embedded 3-node cluster: 8 threads,
 * 400 rounds each, every thread writing its own 10 keys at QUORUM and
 * reading each back at QUORUM at once. A read must give the value its
 * thread wrote last (r + w > n: every acknowledged write is seen). Before
 * issue [9], 2 of 3,200 such reads were stale.
 *
 * Prints "ryw_threads: 3200 reads, 0 stale" and "ryw_threads: all checks
 * passed" on success.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#define THREADS 8
#define ROUNDS 400
#define KEYS 10

static const ringkv_cluster *cluster;

struct worker {
  int id;
  int reads;
  int stale;
  int errors;
  char first_error[256];
};

static void *run(void *arg) {
  struct worker *w = arg;
  char last[KEYS][32];
  memset(last, 0, sizeof last);
  for (int round = 0; round < ROUNDS; round++) {
    char key[32], value[32];
    int k = round % KEYS;
    snprintf(key, sizeof key, "t%d-k%d", w->id, k);
    snprintf(value, sizeof value, "t%d-v%d", w->id, round);
    ringkv_result put =
        ringkv_cluster_put(cluster, S("ryw"), S(key), S(value), RINGKV_CONSISTENCY_QUORUM);
    if (put != RINGKV_OK) {
      if (w->errors++ == 0) {
        snprintf(w->first_error, sizeof w->first_error, "put %s: %s (%s)", key,
                 ringkv_result_name(put), last_error());
      }
      continue;
    }
    snprintf(last[k], sizeof last[k], "%s", value);
    ringkv_buf *got = NULL;
    ringkv_result get =
        ringkv_cluster_get(cluster, S("ryw"), S(key), RINGKV_CONSISTENCY_QUORUM, &got);
    if (get != RINGKV_OK) {
      if (w->errors++ == 0) {
        snprintf(w->first_error, sizeof w->first_error, "get %s: %s (%s)", key,
                 ringkv_result_name(get), last_error());
      }
      continue;
    }
    w->reads++;
    size_t len = ringkv_buf_len(got);
    if (len != strlen(last[k]) || memcmp(ringkv_buf_data(got), last[k], len) != 0) {
      w->stale++;
      fprintf(stderr, "STALE: thread %d read %.*s for %s, wrote %s\n", w->id, (int)len,
              (const char *)ringkv_buf_data(got), key, last[k]);
    }
    ringkv_buf_free(got);
  }
  return NULL;
}

int main(void) {
  ringkv_cluster *c = NULL;
  EXPECT(ringkv_cluster_new(3, RINGKV_TRANSPORT_TCP, &c), RINGKV_OK);
  if (c == NULL) {
    return 1;
  }
  cluster = c;
  pthread_t threads[THREADS];
  struct worker workers[THREADS];
  memset(workers, 0, sizeof workers);
  for (int i = 0; i < THREADS; i++) {
    workers[i].id = i;
    CHECK(pthread_create(&threads[i], NULL, run, &workers[i]) == 0);
  }
  int reads = 0, stale = 0, errors = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(threads[i], NULL);
    reads += workers[i].reads;
    stale += workers[i].stale;
    errors += workers[i].errors;
    if (workers[i].errors > 0) {
      fprintf(stderr, "thread %d: %d errors, first: %s\n", i, workers[i].errors,
              workers[i].first_error);
    }
  }
  printf("ryw_threads: %d reads, %d stale\n", reads, stale);
  CHECK(stale == 0);
  CHECK(errors == 0);
  CHECK(reads == THREADS * ROUNDS);
  ringkv_cluster_free(c);
  if (failures == 0) {
    printf("ryw_threads: all checks passed\n");
  }
  return failures == 0 ? 0 : 1;
}
