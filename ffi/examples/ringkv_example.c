/*
 * ringkv from C: start an embedded 3-node cluster, put, get, delete,
 * count, add to a set, and show the error a bad argument gets; then, when
 * given client addresses (HOST:PORT[,HOST:PORT...]) as argv[1], do the
 * same round trip through a connection to that running cluster, as the
 * user argv[2] with password argv[3] when given (an admin: the round trip
 * sets bucket policies).
 *
 * Exits 0 only when every result it checks is what it should be.
 *
 * Build (docs/ffi.md):
 *   cc -Wall -Wextra -Werror -I ffi/include ffi/examples/ringkv_example.c \
 *      target/debug/libringkv_ffi.a -lstdc++ -lpthread -ldl -lm -o example
 */
#include <stdio.h>
#include <string.h>

#include "ringkv.h"

static int failures = 0;

#define S(text) (const uint8_t *)(text), strlen(text)

/* Prints and counts a check that did not hold. */
static void check(int ok, const char *what) {
  if (!ok) {
    failures++;
    fprintf(stderr, "FAILED: %s\n", what);
  }
}

/* Checks that `got` is `want`; on a mismatch prints the last error. */
static void expect(ringkv_result got, ringkv_result want, const char *what) {
  if (got != want) {
    char message[512];
    size_t len = 0;
    if (ringkv_last_error(message, sizeof message, &len) != RINGKV_OK) {
      strcpy(message, "(message too long)");
    }
    failures++;
    fprintf(stderr, "FAILED: %s: got %s, want %s: %s\n", what,
            ringkv_result_name(got), ringkv_result_name(want), message);
  }
}

/* The operations, on either an embedded cluster or a client. */
typedef struct ops {
  const char *name;
  const void *handle;
  ringkv_result (*set_bucket_policy)(const void *, const uint8_t *, size_t, uint32_t);
  ringkv_result (*put)(const void *, const uint8_t *, size_t, const uint8_t *, size_t,
                       const uint8_t *, size_t, uint32_t);
  ringkv_result (*get)(const void *, const uint8_t *, size_t, const uint8_t *, size_t,
                       uint32_t, ringkv_buf **);
  ringkv_result (*del)(const void *, const uint8_t *, size_t, const uint8_t *, size_t,
                       uint32_t);
  ringkv_result (*counter_add)(const void *, const uint8_t *, size_t, const uint8_t *,
                               size_t, int64_t, uint32_t, int64_t *);
  ringkv_result (*counter_get)(const void *, const uint8_t *, size_t, const uint8_t *,
                               size_t, uint32_t, int64_t *);
  ringkv_result (*set_add)(const void *, const uint8_t *, size_t, const uint8_t *, size_t,
                           const uint8_t *, size_t, uint32_t);
  ringkv_result (*set_members)(const void *, const uint8_t *, size_t, const uint8_t *,
                               size_t, uint32_t, ringkv_set **);
} ops;

/* C cannot convert between function pointer types implicitly; these
 * adapters take the handle as `const void *`. */
#define ADAPT(kind)                                                                     \
  static ringkv_result kind##_policy(const void *h, const uint8_t *b, size_t bl,        \
                                     uint32_t p) {                                      \
    return ringkv_##kind##_set_bucket_policy(h, b, bl, p);                              \
  }                                                                                     \
  static ringkv_result kind##_put(const void *h, const uint8_t *b, size_t bl,           \
                                  const uint8_t *k, size_t kl, const uint8_t *v,        \
                                  size_t vl, uint32_t w) {                              \
    return ringkv_##kind##_put(h, b, bl, k, kl, v, vl, w);                              \
  }                                                                                     \
  static ringkv_result kind##_get(const void *h, const uint8_t *b, size_t bl,           \
                                  const uint8_t *k, size_t kl, uint32_t r,              \
                                  ringkv_buf **out) {                                   \
    return ringkv_##kind##_get(h, b, bl, k, kl, r, out);                                \
  }                                                                                     \
  static ringkv_result kind##_del(const void *h, const uint8_t *b, size_t bl,           \
                                  const uint8_t *k, size_t kl, uint32_t w) {            \
    return ringkv_##kind##_delete(h, b, bl, k, kl, w);                                  \
  }                                                                                     \
  static ringkv_result kind##_counter_add(const void *h, const uint8_t *b, size_t bl,   \
                                          const uint8_t *k, size_t kl, int64_t by,      \
                                          uint32_t w, int64_t *out) {                   \
    return ringkv_##kind##_counter_add(h, b, bl, k, kl, by, w, out);                    \
  }                                                                                     \
  static ringkv_result kind##_counter_get(const void *h, const uint8_t *b, size_t bl,   \
                                          const uint8_t *k, size_t kl, uint32_t r,      \
                                          int64_t *out) {                               \
    return ringkv_##kind##_counter_get(h, b, bl, k, kl, r, out);                        \
  }                                                                                     \
  static ringkv_result kind##_set_add(const void *h, const uint8_t *b, size_t bl,       \
                                      const uint8_t *k, size_t kl, const uint8_t *m,    \
                                      size_t ml, uint32_t w) {                          \
    return ringkv_##kind##_set_add(h, b, bl, k, kl, m, ml, w);                          \
  }                                                                                     \
  static ringkv_result kind##_set_members(const void *h, const uint8_t *b, size_t bl,   \
                                          const uint8_t *k, size_t kl, uint32_t r,      \
                                          ringkv_set **out) {                           \
    return ringkv_##kind##_set_members(h, b, bl, k, kl, r, out);                        \
  }

ADAPT(cluster)
ADAPT(client)

/* The round trip both kinds of handle go through. */
static void round_trip(const ops *o) {
  ringkv_result r;
  printf("%s: round trip\n", o->name);

  /* A put replaces the value it reads first under every policy; LWW
     also settles concurrent puts by time instead of keeping siblings. */
  expect(o->set_bucket_policy(o->handle, S("users"), RINGKV_POLICY_LWW), RINGKV_OK,
         "policy lww");
  expect(o->set_bucket_policy(o->handle, S("hits"), RINGKV_POLICY_PNCOUNTER), RINGKV_OK,
         "policy pncounter");
  expect(o->set_bucket_policy(o->handle, S("tags"), RINGKV_POLICY_ORSET), RINGKV_OK,
         "policy orset");

  expect(o->put(o->handle, S("users"), S("ada"), S("born 1815"), RINGKV_CONSISTENCY_QUORUM),
         RINGKV_OK, "put");
  expect(o->put(o->handle, S("users"), S("ada"), S("born 10 Dec 1815"),
                RINGKV_CONSISTENCY_ALL),
         RINGKV_OK, "overwrite");

  ringkv_buf *value = NULL;
  r = o->get(o->handle, S("users"), S("ada"), RINGKV_CONSISTENCY_QUORUM, &value);
  expect(r, RINGKV_OK, "get");
  if (r == RINGKV_OK) {
    const char *want = "born 10 Dec 1815";
    check(ringkv_buf_len(value) == strlen(want) &&
              memcmp(ringkv_buf_data(value), want, strlen(want)) == 0,
          "get returns the value written last");
    printf("%s: get users/ada = %s\n", o->name, (const char *)ringkv_buf_data(value));
    ringkv_buf_free(value);
  }

  /* An empty value is a value. */
  expect(o->put(o->handle, S("users"), S("nobody"), NULL, 0, RINGKV_CONSISTENCY_DEFAULT),
         RINGKV_OK, "put empty value");
  value = NULL;
  r = o->get(o->handle, S("users"), S("nobody"), RINGKV_CONSISTENCY_DEFAULT, &value);
  expect(r, RINGKV_OK, "get empty value");
  if (r == RINGKV_OK) {
    check(ringkv_buf_len(value) == 0, "an empty value has length 0");
    ringkv_buf_free(value);
  }

  expect(o->del(o->handle, S("users"), S("ada"), RINGKV_CONSISTENCY_QUORUM), RINGKV_OK,
         "delete");
  value = NULL;
  r = o->get(o->handle, S("users"), S("ada"), RINGKV_CONSISTENCY_QUORUM, &value);
  expect(r, RINGKV_NOT_FOUND, "get after delete");
  check(value == NULL, "a failed get leaves its output alone");
  printf("%s: get after delete = %s\n", o->name, ringkv_result_name(r));

  int64_t count = -1;
  expect(o->counter_add(o->handle, S("hits"), S("home"), 5, RINGKV_CONSISTENCY_QUORUM,
                        &count),
         RINGKV_OK, "counter add 5");
  expect(o->counter_add(o->handle, S("hits"), S("home"), -2, RINGKV_CONSISTENCY_QUORUM,
                        &count),
         RINGKV_OK, "counter add -2");
  /* The add answers the value at the replica that coordinated it, which
   * may not have the first add yet when another node coordinated that;
   * a read at QUORUM after adds at QUORUM has both. */
  printf("%s: counter hits/home after the add = %lld\n", o->name, (long long)count);
  count = -1;
  expect(o->counter_get(o->handle, S("hits"), S("home"), RINGKV_CONSISTENCY_QUORUM, &count),
         RINGKV_OK, "counter get");
  check(count == 3, "the counter reads 3 at QUORUM");
  printf("%s: counter hits/home = %lld\n", o->name, (long long)count);

  expect(o->set_add(o->handle, S("tags"), S("post-1"), S("rust"), RINGKV_CONSISTENCY_QUORUM),
         RINGKV_OK, "set add rust");
  expect(o->set_add(o->handle, S("tags"), S("post-1"), S("c"), RINGKV_CONSISTENCY_QUORUM),
         RINGKV_OK, "set add c");
  ringkv_set *members = NULL;
  r = o->set_members(o->handle, S("tags"), S("post-1"), RINGKV_CONSISTENCY_QUORUM, &members);
  expect(r, RINGKV_OK, "set members");
  if (r == RINGKV_OK) {
    check(ringkv_set_len(members) == 2, "the set has 2 members");
    const uint8_t *data = NULL;
    size_t len = 0;
    /* Members come in byte order: "c" before "rust". */
    expect(ringkv_set_member(members, 0, &data, &len), RINGKV_OK, "member 0");
    check(len == 1 && memcmp(data, "c", 1) == 0, "member 0 is c");
    expect(ringkv_set_member(members, 1, &data, &len), RINGKV_OK, "member 1");
    check(len == 4 && memcmp(data, "rust", 4) == 0, "member 1 is rust");
    expect(ringkv_set_member(members, 2, &data, &len), RINGKV_INVALID_ARGUMENT,
           "member 2 is out of range");
    printf("%s: set tags/post-1 has %zu members\n", o->name, ringkv_set_len(members));
    ringkv_set_free(members);
  }

  /* A bad argument: a consistency level that does not exist. */
  r = o->put(o->handle, S("users"), S("ada"), S("x"), 9);
  expect(r, RINGKV_INVALID_ARGUMENT, "consistency 9 is refused");
  char message[256];
  size_t len = 0;
  expect(ringkv_last_error(message, sizeof message, &len), RINGKV_OK, "last error");
  check(strstr(message, "consistency 9") != NULL, "the message names the bad level");
  printf("%s: bad consistency: %s: %s\n", o->name, ringkv_result_name(r), message);
}

int main(int argc, char **argv) {
  ringkv_cluster *cluster = NULL;
  ringkv_result r = ringkv_cluster_new(3, RINGKV_TRANSPORT_MEMORY, &cluster);
  expect(r, RINGKV_OK, "cluster_new");
  if (r != RINGKV_OK) {
    return 1;
  }
  printf("embedded: 3 nodes started\n");
  ops embedded = {"embedded",          cluster,         cluster_policy,
                  cluster_put,         cluster_get,     cluster_del,
                  cluster_counter_add, cluster_counter_get, cluster_set_add,
                  cluster_set_members};
  round_trip(&embedded);
  ringkv_cluster_free(cluster);

  if (argc > 1) {
    ringkv_client *client = NULL;
    if (argc > 3) {
      /* A node that requires users answers nothing but Hello without
       * them, and a wrong password does not connect. */
      ringkv_client *anonymous = NULL;
      r = ringkv_client_new(argv[1], &anonymous);
      expect(r, RINGKV_OK, "client_new without credentials");
      if (r == RINGKV_OK) {
        ringkv_buf *value = NULL;
        r = ringkv_client_get(anonymous, S("users"), S("ada"), RINGKV_CONSISTENCY_DEFAULT, &value);
        expect(r, RINGKV_DENIED, "get without credentials");
        printf("client: anonymous get: %s\n", ringkv_result_name(r));
        ringkv_buf_free(value);
        ringkv_client_free(anonymous);
      }
      r = ringkv_client_new_auth(argv[1], argv[2], "not the password", &client);
      expect(r, RINGKV_DENIED, "client_new_auth with a wrong password");
      printf("client: wrong password: %s\n", ringkv_result_name(r));
      r = ringkv_client_new_auth(argv[1], argv[2], argv[3], &client);
      expect(r, RINGKV_OK, "client_new_auth");
    } else {
      r = ringkv_client_new(argv[1], &client);
      expect(r, RINGKV_OK, "client_new");
    }
    if (r == RINGKV_OK) {
      printf("client: connected\n");
      ops remote = {"client",           client,         client_policy,
                    client_put,         client_get,     client_del,
                    client_counter_add, client_counter_get, client_set_add,
                    client_set_members};
      round_trip(&remote);
      expect(ringkv_client_close(client), RINGKV_OK, "close");
      r = ringkv_client_put(client, S("users"), S("ada"), S("x"), RINGKV_CONSISTENCY_ONE);
      expect(r, RINGKV_CLOSED, "put on a closed client");
      printf("client: closed: %s\n", ringkv_result_name(r));
      ringkv_client_free(client);
    }
  }

  if (failures != 0) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("all checks passed\n");
  return 0;
}
