/* The error fixes of issue [16]: an address that is not HOST:PORT is
 * RINGKV_INVALID_ARGUMENT (not RINGKV_CONNECTION), found before dialing,
 * from every function that takes addresses; and every message starts
 * with the name of the function that failed (ringkv_cluster_new's used
 * to start with "cluster_new:"). Prints "errors: all checks passed" and
 * exits 0 only when every check holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ringkv.h"

/* Whether this thread's last message starts with `name` and ": ". */
static int named(const char *name) {
  const char *m = last_error();
  size_t n = strlen(name);
  int ok = strncmp(m, name, n) == 0 && m[n] == ':' && m[n + 1] == ' ';
  if (!ok) fprintf(stderr, "message %s does not start with %s: \n", m, name);
  return ok;
}

int main(void) {
  static const char *bad[] = {
      "not-an-address", "localhost",      "localhost:",    "localhost:0",
      "localhost:65536", "localhost:http", ":7401",         "::1:7401",
      "[::1:7401",      "[not-v6]:7401",  "a b:7401",      "127.0.0.1:1,nohost",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ringkv_client *client = NULL;
    EXPECT(ringkv_client_new(bad[i], &client), RINGKV_INVALID_ARGUMENT);
    CHECK(client == NULL);
    CHECK(named("ringkv_client_new"));
    CHECK(strstr(last_error(), "is not HOST:PORT") != NULL);
    EXPECT(ringkv_client_new_auth(bad[i], "u", "p", &client), RINGKV_INVALID_ARGUMENT);
    CHECK(named("ringkv_client_new_auth"));
    EXPECT(ringkv_client_connect(bad[i], NULL, &client), RINGKV_INVALID_ARGUMENT);
    CHECK(named("ringkv_client_connect"));
    CHECK(client == NULL);
  }
  printf("errors: %u unparseable addresses are RINGKV_INVALID_ARGUMENT\n",
         (unsigned)(sizeof bad / sizeof bad[0]));

  /* Well-formed addresses where nothing listens are still CONNECTION. */
  static const char *nobody[] = {"127.0.0.1:1", "[::1]:1", "localhost:1"};
  for (size_t i = 0; i < sizeof nobody / sizeof nobody[0]; i++) {
    ringkv_client *client = NULL;
    EXPECT(ringkv_client_new(nobody[i], &client), RINGKV_CONNECTION);
    CHECK(named("ringkv_client_new"));
    CHECK(client == NULL);
  }

  /* Constructors and NULL handles name their own function. */
  ringkv_cluster *cluster = NULL;
  EXPECT(ringkv_cluster_new(0, RINGKV_TRANSPORT_MEMORY, &cluster), RINGKV_INVALID_ARGUMENT);
  CHECK(named("ringkv_cluster_new"));
  EXPECT(ringkv_cluster_new(17, RINGKV_TRANSPORT_MEMORY, &cluster), RINGKV_INVALID_ARGUMENT);
  CHECK(named("ringkv_cluster_new"));
  EXPECT(ringkv_cluster_new(1, 7, &cluster), RINGKV_INVALID_ARGUMENT);
  CHECK(named("ringkv_cluster_new"));
  EXPECT(ringkv_cluster_new(1, RINGKV_TRANSPORT_MEMORY, NULL), RINGKV_NULL_ARGUMENT);
  CHECK(named("ringkv_cluster_new"));
  CHECK(cluster == NULL);
  ringkv_buf *buf = NULL;
  EXPECT(ringkv_cluster_put(NULL, S("b"), S("k"), S("v"), 0), RINGKV_NULL_ARGUMENT);
  CHECK(named("ringkv_cluster_put"));
  EXPECT(ringkv_client_get(NULL, S("b"), S("k"), 0, &buf), RINGKV_NULL_ARGUMENT);
  CHECK(named("ringkv_client_get"));
  EXPECT(ringkv_client_set_bucket_policy(NULL, S("b"), 1), RINGKV_NULL_ARGUMENT);
  CHECK(named("ringkv_client_set_bucket_policy"));
  EXPECT(ringkv_client_options_set_server_name(NULL, "x"), RINGKV_NULL_ARGUMENT);
  CHECK(named("ringkv_client_options_set_server_name"));
  CHECK(buf == NULL);

  /* And on a live cluster, the shared layer's messages are renamed too. */
  EXPECT(ringkv_cluster_new(1, RINGKV_TRANSPORT_MEMORY, &cluster), RINGKV_OK);
  if (cluster != NULL) {
    EXPECT(ringkv_cluster_get(cluster, S("b"), S("missing"), 0, &buf), RINGKV_NOT_FOUND);
    CHECK(named("ringkv_cluster_get"));
    EXPECT(ringkv_cluster_set_bucket_policy(cluster, S("b"), 99), RINGKV_INVALID_ARGUMENT);
    CHECK(named("ringkv_cluster_set_bucket_policy"));
    EXPECT(ringkv_cluster_put(cluster, S("b"), S("k"), S("v"), RINGKV_CONSISTENCY_TWO),
           RINGKV_INVALID_ARGUMENT);
    CHECK(named("ringkv_cluster_put"));
    ringkv_cluster_free(cluster);
  }
  printf("errors: every message names its function\n");

  if (failures != 0) {
    fprintf(stderr, "errors: %d checks failed\n", failures);
    return 1;
  }
  printf("errors: all checks passed\n");
  return 0;
}
