/* The log callback of an embedded cluster, from C: the nodes' log lines
 * at INFO and below go to a function of the program, which counts them
 * and keeps the first that tells a node came up. The callback is called
 * from the nodes' threads, concurrently, so it touches only atomics and
 * a mutex; it never calls into the library. After ringkv_cluster_free
 * returns it is not called again.
 *
 * Build (from the repository root, after cargo build --release -p ringkv-ffi):
 *   cc -Wall -Wextra -Werror -I ffi/include ffi/examples/logging.c \
 *      target/release/libringkv_ffi.a -lstdc++ -lpthread -ldl -lm -o logging
 * Exits 0 when lines arrived, none above INFO, one said a node is up,
 * and none came after the cluster was freed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "ringkv.h"

#define B(text) (const uint8_t *)(text), strlen(text)

struct log_state {
  atomic_long lines;
  atomic_long above_info;
  atomic_int freed;
  atomic_long after_free;
  pthread_mutex_t lock; /* guards first_up */
  char first_up[256];
};

/* Called from any of the nodes' threads: thread-safe, quick, no calls
 * into the library. target and message die when it returns: copy them. */
static void on_log(void *user_data, uint32_t level, const char *target, const char *message) {
  struct log_state *st = user_data;
  if (atomic_load(&st->freed)) atomic_fetch_add(&st->after_free, 1);
  atomic_fetch_add(&st->lines, 1);
  if (level > RINGKV_LOG_INFO) atomic_fetch_add(&st->above_info, 1);
  if (strstr(message, "is up") != NULL) {
    pthread_mutex_lock(&st->lock);
    if (st->first_up[0] == '\0') snprintf(st->first_up, sizeof st->first_up, "%s: %s", target, message);
    pthread_mutex_unlock(&st->lock);
  }
}

static int fail(const char *what, ringkv_result r) {
  char msg[512];
  size_t len = 0;
  if (ringkv_last_error(msg, sizeof msg, &len) != RINGKV_OK) msg[0] = '\0';
  fprintf(stderr, "%s: %s: %s\n", what, ringkv_result_name(r), msg);
  return 1;
}

int main(void) {
  static struct log_state st = {.lock = PTHREAD_MUTEX_INITIALIZER};
  ringkv_cluster_options *opts = NULL;
  ringkv_result r = ringkv_cluster_options_new(&opts);
  if (r != RINGKV_OK) return fail("options", r);
  /* A level out of range is refused; the options keep what they had. */
  ringkv_result bad = ringkv_cluster_options_set_log(opts, on_log, &st, RINGKV_LOG_TRACE + 1);
  printf("logging: max_level 6 is %s\n", ringkv_result_name(bad));
  r = ringkv_cluster_options_set_log(opts, on_log, &st, RINGKV_LOG_INFO);
  ringkv_cluster *cluster = NULL;
  if (r == RINGKV_OK) r = ringkv_cluster_new_with(3, RINGKV_TRANSPORT_MEMORY, opts, &cluster);
  ringkv_cluster_options_free(opts); /* the cluster copied them */
  if (r != RINGKV_OK) return fail("cluster", r);

  for (int i = 0; i < 10; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    r = ringkv_cluster_put(cluster, B("logged"), B(key), B("v"), RINGKV_CONSISTENCY_QUORUM);
    if (r != RINGKV_OK) {
      ringkv_cluster_free(cluster);
      return fail("put", r);
    }
  }
  ringkv_cluster_free(cluster); /* after this, on_log is not called again */
  atomic_store(&st.freed, 1);

  long lines = atomic_load(&st.lines);
  printf("logging: %ld lines at INFO or below while the cluster lived\n", lines);
  pthread_mutex_lock(&st.lock);
  int up = st.first_up[0] != '\0';
  if (up) printf("logging: e.g. %s\n", st.first_up);
  pthread_mutex_unlock(&st.lock);
  if (up) printf("logging: the nodes said a node is up\n");
  if (atomic_load(&st.above_info) == 0) printf("logging: no line above INFO\n");
  if (atomic_load(&st.after_free) == 0) printf("logging: no line after ringkv_cluster_free\n");
  if (bad != RINGKV_INVALID_ARGUMENT || lines < 1 || !up || atomic_load(&st.above_info) != 0 ||
      atomic_load(&st.after_free) != 0) {
    fprintf(stderr, "logging: a check failed\n");
    return 1;
  }
  printf("all checks passed\n");
  return 0;
}
