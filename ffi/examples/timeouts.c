/* Versions and time bounds from C: which library this is, a client whose
 * every call is bounded (connect 500 ms, request 2 s, retries included),
 * and a call bounded tighter on its own (300 ms).
 *
 * Build (from the repository root, after cargo build --release -p ringkv-ffi):
 *   cc -Wall -Wextra -Werror -I ffi/include ffi/examples/timeouts.c \
 *      target/release/libringkv_ffi.a -lstdc++ -lpthread -ldl -lm -o timeouts
 * Starts an embedded cluster with client ports and connects to it; exits 0
 * when every call answered within its bound. */
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
  /* The header and the library must agree before anything else. */
  if (ringkv_abi_version() != RINGKV_ABI_VERSION) {
    fprintf(stderr, "built against ABI %d, linked with %u\n", RINGKV_ABI_VERSION,
            ringkv_abi_version());
    return 1;
  }
  printf("timeouts: ringkv %s, ABI %u\n", ringkv_version(), ringkv_abi_version());

  ringkv_cluster *cluster = NULL;
  ringkv_result r = ringkv_cluster_new(3, RINGKV_TRANSPORT_TCP, &cluster);
  if (r != RINGKV_OK) return fail("cluster", r);
  ringkv_buf *addrs = NULL;
  r = ringkv_cluster_client_addrs(cluster, &addrs);
  if (r != RINGKV_OK) {
    ringkv_cluster_free(cluster);
    return fail("addresses", r);
  }

  ringkv_client_options *options = NULL;
  ringkv_client *client = NULL;
  r = ringkv_client_options_new(&options);
  if (r == RINGKV_OK) r = ringkv_client_options_set_timeout_ms(options, 500, 2000);
  /* The buffer's text is NUL-terminated. */
  if (r == RINGKV_OK) r = ringkv_client_connect((const char *)ringkv_buf_data(addrs), options, &client);
  ringkv_client_options_free(options); /* the client copied what it needs */
  ringkv_buf_free(addrs);
  if (r != RINGKV_OK) {
    ringkv_cluster_free(cluster);
    return fail("connect", r);
  }

  /* 0: the client's bound (2 s); 300: this call's own. */
  r = ringkv_client_put_ctx(client, B("cfg"), B("mode"), B("fast"), NULL, 0,
                            RINGKV_CONSISTENCY_QUORUM, 0, NULL);
  ringkv_object *object = NULL;
  if (r == RINGKV_OK)
    r = ringkv_client_get_object(client, B("cfg"), B("mode"), RINGKV_CONSISTENCY_QUORUM, 300,
                                 &object);
  if (r == RINGKV_OK) {
    const uint8_t *value = NULL;
    size_t len = 0;
    r = ringkv_object_value(object, 0, &value, &len);
    if (r == RINGKV_OK) printf("timeouts: cfg/mode = %.*s within 300 ms\n", (int)len, (const char *)value);
  }
  ringkv_object_free(object);
  /* A bound above the largest is refused before anything is sent. */
  ringkv_result big = ringkv_client_get_object(client, B("cfg"), B("mode"),
                                               RINGKV_CONSISTENCY_QUORUM, RINGKV_MAX_TIMEOUT_MS + 1,
                                               &object);
  printf("timeouts: a bound of RINGKV_MAX_TIMEOUT_MS + 1 is %s\n", ringkv_result_name(big));
  ringkv_client_free(client);
  ringkv_cluster_free(cluster);
  if (r != RINGKV_OK) return fail("put or get", r);
  if (big != RINGKV_INVALID_ARGUMENT) return 1;
  printf("all checks passed\n");
  return 0;
}
