/* The log callback of embedded clusters (issue [16]): a 3-node cluster
 * made with a callback at INFO passes its nodes' log lines to it (from
 * the nodes' threads, concurrently: hence the atomics and the mutex), and
 * nothing arrives after ringkv_cluster_free returns. Runs in a process of
 * its own, as the tracing subscriber the library installs is
 * process-wide. Prints "log: all checks passed" and exits 0 only when
 * every check holds. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "ringkv.h"

#define KEPT 8

static atomic_long lines;
static atomic_long above_info; /* lines at a level the callback did not ask for */
static atomic_long late;       /* lines after ringkv_cluster_free returned */
static atomic_long bad;        /* NULL strings or a wrong user_data */
static atomic_long ups;        /* "membership: nX is up" lines */
static atomic_int freed;
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static char kept[KEPT][256];
static int kept_count;
static int token;

static void on_log(void *user_data, uint32_t level, const char *target, const char *message) {
  if (atomic_load(&freed)) atomic_fetch_add(&late, 1);
  if (user_data != &token || target == NULL || message == NULL) {
    atomic_fetch_add(&bad, 1);
    return;
  }
  if (level < RINGKV_LOG_ERROR || level > RINGKV_LOG_INFO) atomic_fetch_add(&above_info, 1);
  atomic_fetch_add(&lines, 1);
  if (strstr(message, "is up") != NULL) atomic_fetch_add(&ups, 1);
  pthread_mutex_lock(&kept_lock);
  if (kept_count < KEPT) {
    snprintf(kept[kept_count], sizeof kept[kept_count], "%u %s: %s", (unsigned)level, target,
             message);
    kept_count++;
  }
  pthread_mutex_unlock(&kept_lock);
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

int main(void) {
  ringkv_cluster_options *opts = NULL;
  EXPECT(ringkv_cluster_options_new(&opts), RINGKV_OK);

  /* Misuse: NULL options, levels out of range. */
  EXPECT(ringkv_cluster_options_set_log(NULL, on_log, &token, RINGKV_LOG_INFO),
         RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_log(opts, on_log, &token, 0), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_options_set_log(opts, on_log, &token, RINGKV_LOG_TRACE + 1),
         RINGKV_INVALID_ARGUMENT);
  /* NULL removes the callback; then it is set. */
  EXPECT(ringkv_cluster_options_set_log(opts, NULL, NULL, RINGKV_LOG_INFO), RINGKV_OK);
  EXPECT(ringkv_cluster_options_set_log(opts, on_log, &token, RINGKV_LOG_INFO), RINGKV_OK);

  ringkv_cluster *cluster = NULL;
  EXPECT(ringkv_cluster_new_with(3, RINGKV_TRANSPORT_MEMORY, opts, &cluster), RINGKV_OK);
  ringkv_cluster_options_free(opts);
  if (cluster == NULL) {
    fprintf(stderr, "log: no cluster\n");
    return 1;
  }
  for (int i = 0; i < 20; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    EXPECT(ringkv_cluster_put(cluster, S("logged"), S(key), S("v"), RINGKV_CONSISTENCY_QUORUM),
           RINGKV_OK);
  }
  ringkv_cluster_free(cluster);
  atomic_store(&freed, 1);
  long seen = atomic_load(&lines);
  CHECK(seen >= 1);
  CHECK(atomic_load(&above_info) == 0);
  CHECK(atomic_load(&bad) == 0);
  pthread_mutex_lock(&kept_lock);
  CHECK(kept_count >= 1);
  for (int i = 0; i < kept_count; i++) printf("log: line: %s\n", kept[i]);
  pthread_mutex_unlock(&kept_lock);
  /* The nodes saw each other come up, at INFO. */
  CHECK(atomic_load(&ups) >= 1);
  printf("log: %ld INFO lines or below while the cluster lived\n", seen);

  /* A cluster without a callback afterwards: the freed one's callback
   * gets nothing from it. */
  cluster = NULL;
  EXPECT(ringkv_cluster_new(3, RINGKV_TRANSPORT_MEMORY, &cluster), RINGKV_OK);
  EXPECT(ringkv_cluster_put(cluster, S("logged"), S("k"), S("v"), RINGKV_CONSISTENCY_QUORUM),
         RINGKV_OK);
  ringkv_cluster_free(cluster);
  sleep_ms(200);
  CHECK(atomic_load(&late) == 0);
  printf("log: %ld lines after ringkv_cluster_free\n", atomic_load(&late));

  if (failures != 0) {
    fprintf(stderr, "log: %d checks failed\n", failures);
    return 1;
  }
  printf("log: all checks passed\n");
  return 0;
}
