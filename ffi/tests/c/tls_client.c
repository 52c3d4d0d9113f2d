/*
 * TLS on the client port, from C: connects through ringkv_client_options
 * to a ringkv-node whose client port has a certificate from the cluster
 * CA, puts and gets, then checks the refusals: no CA (plain TCP), another
 * CA, a name the certificate does not carry, a name without a CA. Built
 * and run by tests/it/tls.rs with -Wall -Wextra -Werror and the sanitizers;
 * exits 0 only when every check holds, and prints one line per step.
 *
 * Usage: tls_client ADDR CA_PEM_FILE OTHER_CA_PEM_FILE USER PASSWORD
 * (the node's certificate names 127.0.0.1 and db.example.test).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* The whole file at `path`, NUL-terminated, in *out (free it); its length
 * without the NUL in *len. 0 on success. */
static int read_file(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return -1;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    n += fread(buf + n, 1, cap - n - 1, f);
    if (n < cap - 1) {
      break;
    }
    cap *= 2;
    char *bigger = realloc(buf, cap);
    if (bigger == NULL) {
      free(buf);
    }
    buf = bigger;
  }
  fclose(f);
  if (buf == NULL) {
    return -1;
  }
  buf[n] = 0;
  *out = buf;
  *len = n;
  return 0;
}

/*
 * Connects to `addr` with the options made from the arguments (NULL for
 * what is not set); returns the result, prints "<label>: <name>: <message>"
 * on failure, and frees the client on success.
 */
static ringkv_result try_connect(const char *label, const char *addr, const char *ca_file,
                                 const char *server_name, const char *user,
                                 const char *password) {
  ringkv_client_options *options = NULL;
  EXPECT(ringkv_client_options_new(&options), RINGKV_OK);
  if (options == NULL) {
    return RINGKV_INTERNAL;
  }
  EXPECT(ringkv_client_options_set_credentials(options, user, password), RINGKV_OK);
  if (ca_file != NULL) {
    EXPECT(ringkv_client_options_set_tls_ca_file(options, ca_file), RINGKV_OK);
  }
  if (server_name != NULL) {
    EXPECT(ringkv_client_options_set_server_name(options, server_name), RINGKV_OK);
  }
  ringkv_client *client = NULL;
  ringkv_result r = ringkv_client_connect(addr, options, &client);
  ringkv_client_options_free(options);
  if (r == RINGKV_OK) {
    CHECK(client != NULL);
    printf("%s: connected\n", label);
    ringkv_client_free(client);
  } else {
    CHECK(client == NULL);
    printf("%s: %s: %s\n", label, ringkv_result_name(r), last_error());
  }
  return r;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s ADDR CA_PEM_FILE OTHER_CA_PEM_FILE USER PASSWORD\n", argv[0]);
    return 2;
  }
  const char *addr = argv[1], *ca_file = argv[2], *other_ca = argv[3];
  const char *user = argv[4], *password = argv[5];

  /* The CA from memory, the credentials, and TLS all the way. */
  char *pem = NULL;
  size_t pem_len = 0;
  if (read_file(ca_file, &pem, &pem_len) != 0) {
    fprintf(stderr, "cannot read %s\n", ca_file);
    return 2;
  }
  ringkv_client_options *options = NULL;
  EXPECT(ringkv_client_options_new(&options), RINGKV_OK);
  EXPECT(ringkv_client_options_set_credentials(options, user, password), RINGKV_OK);
  EXPECT(ringkv_client_options_set_tls_ca_pem(options, (const uint8_t *)pem, pem_len), RINGKV_OK);
  free(pem);
  ringkv_client *client = NULL;
  EXPECT(ringkv_client_connect(addr, options, &client), RINGKV_OK);
  /* The client copied what it needs: the options may go now. */
  ringkv_client_options_free(options);
  if (client == NULL) {
    fprintf(stderr, "no TLS client: %s\n", last_error());
    return 1;
  }
  printf("tls: connected\n");
  const char *value = "a value only TLS may carry";
  EXPECT(ringkv_client_set_bucket_policy(client, S("tls"), RINGKV_POLICY_LWW), RINGKV_OK);
  EXPECT(ringkv_client_put(client, S("tls"), S("k"), S(value), RINGKV_CONSISTENCY_ONE),
         RINGKV_OK);
  ringkv_buf *got = NULL;
  EXPECT(ringkv_client_get(client, S("tls"), S("k"), RINGKV_CONSISTENCY_ONE, &got), RINGKV_OK);
  CHECK(got != NULL && ringkv_buf_len(got) == strlen(value) &&
        memcmp(ringkv_buf_data(got), value, strlen(value)) == 0);
  if (got != NULL) {
    printf("tls: get tls/k = %s\n", (const char *)ringkv_buf_data(got));
  }
  ringkv_buf_free(got);

  /* The CA from a file, and the certificate's DNS name asked for. */
  EXPECT(try_connect("tls, named", addr, ca_file, "db.example.test", user, password), RINGKV_OK);

  /* Refused: plain TCP to a TLS port; another CA; a name the certificate
   * does not carry; a name without a CA (refused before dialing). */
  EXPECT(try_connect("no CA", addr, NULL, NULL, user, password), RINGKV_CONNECTION);
  EXPECT(try_connect("other CA", addr, other_ca, NULL, user, password), RINGKV_TLS);
  EXPECT(try_connect("wrong name", addr, ca_file, "elsewhere.example.test", user, password),
         RINGKV_TLS);
  EXPECT(try_connect("name without CA", addr, NULL, "db.example.test", user, password),
         RINGKV_INVALID_ARGUMENT);
  /* TLS with a wrong password: TLS is fine, the node still says no. */
  EXPECT(try_connect("wrong password", addr, ca_file, NULL, user, "not the password"),
         RINGKV_DENIED);

  /* The first client is still served after the refusals. */
  got = NULL;
  EXPECT(ringkv_client_get(client, S("tls"), S("k"), RINGKV_CONSISTENCY_ONE, &got), RINGKV_OK);
  CHECK(got != NULL && ringkv_buf_len(got) == strlen(value));
  ringkv_buf_free(got);
  ringkv_client_free(client);

  if (failures != 0) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("tls: all checks passed\n");
  return 0;
}
