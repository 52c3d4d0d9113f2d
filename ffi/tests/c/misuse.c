/*
 * Misuse of the C ABI from C: NULL handles, NULL buffers, zero lengths,
 * invalid consistency levels, a closed client, too-small error buffers.
 * Each must give its documented result and leave outputs alone. Built by
 * tests/it/c_misuse.rs with -Wall -Wextra -Werror and the sanitizers; exits
 * 0 only when every check holds.
 */
/* sigaction is POSIX, not C11. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

int main(void) {
  ringkv_buf *buf = NULL;
  ringkv_set *set = NULL;
  int64_t value = 42;

  /* NULL handles. */
  EXPECT(ringkv_cluster_put(NULL, S("b"), S("k"), S("v"), 0), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_cluster_put: cluster is NULL") == 0);
  EXPECT(ringkv_client_get(NULL, S("b"), S("k"), 0, &buf), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_client_counter_add(NULL, S("b"), S("k"), 1, 0, &value), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_client_close(NULL), RINGKV_NULL_ARGUMENT);
  CHECK(buf == NULL && value == 42);
  ringkv_cluster_free(NULL);
  ringkv_client_free(NULL);
  ringkv_buf_free(NULL);
  ringkv_set_free(NULL);

  /* Client options: NULLs, bad PEM, a name without a CA, freeing NULL. */
  ringkv_client_options_free(NULL);
  EXPECT(ringkv_client_options_new(NULL), RINGKV_NULL_ARGUMENT);
  ringkv_client_options *options = NULL;
  EXPECT(ringkv_client_options_new(&options), RINGKV_OK);
  EXPECT(ringkv_client_options_set_credentials(NULL, "u", "p"), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_client_options_set_credentials: options is NULL") == 0);
  EXPECT(ringkv_client_options_set_credentials(options, "u", NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_client_options_set_tls_ca_pem(options, NULL, 3), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_client_options_set_tls_ca_pem: pem is NULL") == 0);
  EXPECT(ringkv_client_options_set_tls_ca_pem(options, NULL, 0), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_client_options_set_tls_ca_pem(options, S("not PEM")), RINGKV_INVALID_ARGUMENT);
  CHECK(strncmp(last_error(), "ringkv_client_options_set_tls_ca_pem: ",
                strlen("ringkv_client_options_set_tls_ca_pem: ")) == 0);
  EXPECT(ringkv_client_options_set_tls_ca_file(options, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_client_options_set_tls_ca_file(options, "/nonexistent/ca.pem"),
         RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_client_options_set_server_name(options, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_client_options_set_server_name(options, ""), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_client_options_set_server_name(options, "db.example.test"), RINGKV_OK);
  ringkv_client *nobody = NULL;
  /* The bad PEMs set no CA, so the name has none to go with. */
  EXPECT(ringkv_client_connect("127.0.0.1:1", options, &nobody), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_client_connect(NULL, options, &nobody), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_client_connect("127.0.0.1:1", options, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_client_connect("127.0.0.1:1", NULL, &nobody), RINGKV_CONNECTION);
  CHECK(nobody == NULL);
  ringkv_client_options_free(options);

  /* A TCP cluster, so that a client can connect to it. */
  ringkv_cluster *cluster = NULL;
  EXPECT(ringkv_cluster_new(3, RINGKV_TRANSPORT_TCP, &cluster), RINGKV_OK);
  if (cluster == NULL) {
    fprintf(stderr, "no cluster: %s\n", last_error());
    return 1;
  }
  EXPECT(ringkv_cluster_set_bucket_policy(cluster, S("b"), RINGKV_POLICY_LWW), RINGKV_OK);

  /* SIGPIPE, left at its default by this program, is ignored once a
     cluster runs: a write to a link its peer closed fails, it does not
     kill the program (docs/ffi.md, "Signals"). */
  struct sigaction pipe_action;
  CHECK(sigaction(SIGPIPE, NULL, &pipe_action) == 0);
  CHECK(pipe_action.sa_handler == SIG_IGN);

  /* NULL buffers with a length, NULL outputs. */
  EXPECT(ringkv_cluster_put(cluster, NULL, 1, S("k"), S("v"), 0), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_put(cluster, S("b"), S("k"), NULL, 5, 0), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_cluster_put: value is NULL") == 0);
  EXPECT(ringkv_cluster_get(cluster, S("b"), S("k"), 0, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_new(3, 0, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_client_new(NULL, NULL), RINGKV_NULL_ARGUMENT);

  /* Zero lengths: an empty bucket or key is refused, an empty value kept. */
  EXPECT(ringkv_cluster_put(cluster, NULL, 0, S("k"), S("v"), 0), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_get(cluster, S("b"), (const uint8_t *)"k", 0, 0, &buf),
         RINGKV_INVALID_ARGUMENT);
  CHECK(buf == NULL);
  EXPECT(ringkv_cluster_put(cluster, S("b"), S("empty"), NULL, 0, 0), RINGKV_OK);
  EXPECT(ringkv_cluster_get(cluster, S("b"), S("empty"), 0, &buf), RINGKV_OK);
  CHECK(buf != NULL && ringkv_buf_len(buf) == 0 && ringkv_buf_data(buf)[0] == 0);
  ringkv_buf_free(buf);
  buf = NULL;

  /* Invalid consistency levels and policies. */
  EXPECT(ringkv_cluster_put(cluster, S("b"), S("k"), S("v"), 5), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_get(cluster, S("b"), S("k"), 0xffffffffu, &buf),
         RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_set_bucket_policy(cluster, S("b"), 99), RINGKV_INVALID_ARGUMENT);
  CHECK(buf == NULL);

  /* A closed client. */
  ringkv_buf *addrs = NULL;
  EXPECT(ringkv_cluster_client_addrs(cluster, &addrs), RINGKV_OK);
  ringkv_client *client = NULL;
  EXPECT(ringkv_client_new((const char *)ringkv_buf_data(addrs), &client), RINGKV_OK);
  ringkv_buf_free(addrs);
  if (client != NULL) {
    EXPECT(ringkv_client_put(client, S("b"), S("k"), S("v"), RINGKV_CONSISTENCY_ALL),
           RINGKV_OK);
    EXPECT(ringkv_client_get(client, S("b"), S("k"), RINGKV_CONSISTENCY_ALL, &buf), RINGKV_OK);
    CHECK(buf != NULL && ringkv_buf_len(buf) == 1 && ringkv_buf_data(buf)[0] == 'v');
    ringkv_buf_free(buf);
    buf = NULL;
    EXPECT(ringkv_client_close(client), RINGKV_OK);
    EXPECT(ringkv_client_get(client, S("b"), S("k"), 0, &buf), RINGKV_CLOSED);
    CHECK(strcmp(last_error(), "ringkv_client_get: the client is closed") == 0);
    EXPECT(ringkv_client_set_members(client, S("b"), S("k"), 0, &set), RINGKV_CLOSED);
    EXPECT(ringkv_client_close(client), RINGKV_OK);
    CHECK(buf == NULL && set == NULL);
    ringkv_client_free(client);
  }
  ringkv_cluster_free(cluster);

  /* Too-small error buffers: the size comes back, the buffer is untouched. */
  EXPECT(ringkv_cluster_delete(NULL, S("b"), S("k"), 0), RINGKV_NULL_ARGUMENT);
  const char *want = "ringkv_cluster_delete: cluster is NULL";
  char small[8];
  memset(small, '#', sizeof small);
  size_t needed = 0;
  EXPECT(ringkv_last_error(small, sizeof small, &needed), RINGKV_BUFFER_TOO_SMALL);
  CHECK(needed == strlen(want));
  CHECK(small[0] == '#' && small[7] == '#');
  EXPECT(ringkv_last_error(small, 0, &needed), RINGKV_BUFFER_TOO_SMALL);
  char exact[64];
  EXPECT(ringkv_last_error(exact, needed + 1, &needed), RINGKV_OK);
  CHECK(strcmp(exact, want) == 0);
  EXPECT(ringkv_last_error(NULL, 10, &needed), RINGKV_NULL_ARGUMENT);

  CHECK(strcmp(ringkv_result_name(RINGKV_CLOSED), "RINGKV_CLOSED") == 0);
  CHECK(strcmp(ringkv_result_name(1000), "RINGKV_UNKNOWN_RESULT") == 0);

  if (failures != 0) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("misuse: all checks passed\n");
  return 0;
}
