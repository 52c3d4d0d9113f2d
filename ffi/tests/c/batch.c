/* Batch calls (issue [16]): a multi-get and a multi-put of many keys of
 * one bucket in one request, answered with a ringkv_batch holding one
 * item per key, in request order, each OK (its object, or the written
 * object's context) or the error it got. A batch refused whole (no keys,
 * a key twice in a multi-put, NULL arrays) is the call's own error, with
 * the output left alone.
 *
 * Runs on an embedded 3-node cluster over TCP, through the cluster handle
 * and through a client connection to its nodes; prints "batch: all
 * checks passed" and exits 0 only when every check holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ringkv.h"

typedef ringkv_result (*multi_get_fn)(const void *, const uint8_t *, size_t,
                                      const uint8_t *const *, const size_t *, size_t, uint32_t,
                                      uint32_t, ringkv_batch **);
typedef ringkv_result (*multi_put_fn)(const void *, const uint8_t *, size_t,
                                      const uint8_t *const *, const size_t *,
                                      const uint8_t *const *, const size_t *,
                                      const uint8_t *const *, const size_t *, size_t, uint32_t,
                                      uint32_t, ringkv_batch **);

typedef struct {
  const char *name;
  const void *handle;
  multi_get_fn get;
  multi_put_fn put;
} api;

static ringkv_result cl_get(const void *h, const uint8_t *b, size_t bl, const uint8_t *const *k,
                            const size_t *kl, size_t n, uint32_t r, uint32_t t,
                            ringkv_batch **o) {
  return ringkv_cluster_multi_get((const ringkv_cluster *)h, b, bl, k, kl, n, r, t, o);
}
static ringkv_result cl_put(const void *h, const uint8_t *b, size_t bl, const uint8_t *const *k,
                            const size_t *kl, const uint8_t *const *v, const size_t *vl,
                            const uint8_t *const *c, const size_t *cl, size_t n, uint32_t w,
                            uint32_t t, ringkv_batch **o) {
  return ringkv_cluster_multi_put((const ringkv_cluster *)h, b, bl, k, kl, v, vl, c, cl, n, w, t,
                                  o);
}
static ringkv_result cn_get(const void *h, const uint8_t *b, size_t bl, const uint8_t *const *k,
                            const size_t *kl, size_t n, uint32_t r, uint32_t t,
                            ringkv_batch **o) {
  return ringkv_client_multi_get((const ringkv_client *)h, b, bl, k, kl, n, r, t, o);
}
static ringkv_result cn_put(const void *h, const uint8_t *b, size_t bl, const uint8_t *const *k,
                            const size_t *kl, const uint8_t *const *v, const size_t *vl,
                            const uint8_t *const *c, const size_t *cl, size_t n, uint32_t w,
                            uint32_t t, ringkv_batch **o) {
  return ringkv_client_multi_put((const ringkv_client *)h, b, bl, k, kl, v, vl, c, cl, n, w, t,
                                 o);
}

#define Q RINGKV_CONSISTENCY_QUORUM
#define N 200
#define MISSING 20

/* Whether value i of o is `want`. */
static int value_is(const ringkv_object *o, size_t i, const char *want) {
  const uint8_t *data = NULL;
  size_t len = 0;
  if (ringkv_object_value(o, i, &data, &len) != RINGKV_OK) return 0;
  return len == strlen(want) && memcmp(data, want, len) == 0;
}

static char keys_text[N + MISSING][16];
static char values_text[N][16];
static const uint8_t *keys[N + MISSING];
static size_t key_lens[N + MISSING];
static const uint8_t *values[N];
static size_t value_lens[N];

static void scenario(const api *a, const char *bucket) {
  for (size_t i = 0; i < N + MISSING; i++) {
    snprintf(keys_text[i], sizeof keys_text[i], i < N ? "key-%zu" : "missing-%zu", i);
    keys[i] = (const uint8_t *)keys_text[i];
    key_lens[i] = strlen(keys_text[i]);
  }
  for (size_t i = 0; i < N; i++) {
    snprintf(values_text[i], sizeof values_text[i], "value-%zu", i);
    values[i] = (const uint8_t *)values_text[i];
    value_lens[i] = strlen(values_text[i]);
  }

  /* 200 blind writes in one batch: each OK, each with a context. */
  ringkv_batch *b = NULL;
  EXPECT(a->put(a->handle, S(bucket), keys, key_lens, values, value_lens, NULL, NULL, N, Q, 0, &b),
         RINGKV_OK);
  CHECK(b != NULL && ringkv_batch_len(b) == N);
  size_t ok = 0;
  for (size_t i = 0; i < ringkv_batch_len(b); i++) {
    const uint8_t *ctx = NULL;
    size_t ctx_len = 0;
    if (ringkv_batch_status(b, i) == RINGKV_OK &&
        ringkv_batch_context(b, i, &ctx, &ctx_len) == RINGKV_OK && ctx_len > 0) {
      ok++;
    }
  }
  CHECK(ok == N);
  /* A multi-put's batch holds contexts, not objects. */
  const ringkv_object *obj = NULL;
  EXPECT(ringkv_batch_object(b, 0, &obj), RINGKV_INVALID_ARGUMENT);
  CHECK(obj == NULL);
  ringkv_batch_free(b);
  printf("%s: multi_put of %d keys: %zu OK\n", a->name, N, ok);

  /* Read them back, with keys never written after them. */
  b = NULL;
  EXPECT(a->get(a->handle, S(bucket), keys, key_lens, N + MISSING, Q, 0, &b), RINGKV_OK);
  CHECK(b != NULL && ringkv_batch_len(b) == N + MISSING);
  size_t found = 0, empty = 0;
  for (size_t i = 0; b != NULL && i < ringkv_batch_len(b); i++) {
    EXPECT(ringkv_batch_status(b, i), RINGKV_OK);
    obj = NULL;
    EXPECT(ringkv_batch_object(b, i, &obj), RINGKV_OK);
    if (obj == NULL) continue;
    if (i < N && ringkv_object_count(obj) == 1 && value_is(obj, 0, values_text[i])) found++;
    if (i >= N && ringkv_object_count(obj) == 0 && ringkv_object_found(obj) == 0) empty++;
  }
  CHECK(found == N && empty == MISSING);
  printf("%s: multi_get: %zu found in order, %zu missing with 0 values\n", a->name, found, empty);

  /* Out of range, and NULL outputs: untouched. */
  obj = NULL;
  EXPECT(ringkv_batch_status(b, N + MISSING), RINGKV_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "is not below the batch's 220 items") != NULL);
  EXPECT(ringkv_batch_object(b, N + MISSING, &obj), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_batch_object(b, 0, NULL), RINGKV_NULL_ARGUMENT);
  const uint8_t *data = NULL;
  size_t len = 0;
  EXPECT(ringkv_batch_context(b, 0, NULL, &len), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_batch_context(b, 0, &data, NULL), RINGKV_NULL_ARGUMENT);
  CHECK(obj == NULL && data == NULL && len == 0);
  ringkv_batch_free(b);

  /* Siblings per item: a second blind batch of the first 10 keys leaves
   * two values each (default policy: SIBLINGS); a batch written with the
   * contexts read resolves them. */
  const char *again[10];
  size_t again_lens[10];
  for (size_t i = 0; i < 10; i++) {
    again[i] = "again";
    again_lens[i] = 5;
  }
  b = NULL;
  EXPECT(a->put(a->handle, S(bucket), keys, key_lens, (const uint8_t *const *)again, again_lens,
                NULL, NULL, 10, Q, 0, &b),
         RINGKV_OK);
  for (size_t i = 0; i < 10; i++) EXPECT(ringkv_batch_status(b, i), RINGKV_OK);
  ringkv_batch_free(b);
  b = NULL;
  EXPECT(a->get(a->handle, S(bucket), keys, key_lens, 10, Q, 0, &b), RINGKV_OK);
  size_t pairs = 0;
  const uint8_t *ctxs[10];
  size_t ctx_lens[10];
  for (size_t i = 0; i < 10; i++) {
    obj = NULL;
    ctxs[i] = NULL;
    ctx_lens[i] = 0;
    if (ringkv_batch_object(b, i, &obj) != RINGKV_OK || obj == NULL) continue;
    if (ringkv_object_count(obj) == 2 &&
        ((value_is(obj, 0, "again") && value_is(obj, 1, values_text[i])) ||
         (value_is(obj, 1, "again") && value_is(obj, 0, values_text[i]))))
      pairs++;
    EXPECT(ringkv_batch_context(b, i, &ctxs[i], &ctx_lens[i]), RINGKV_OK);
  }
  CHECK(pairs == 10);
  printf("%s: two blind batches = %zu keys with 2 siblings\n", a->name, pairs);
  ringkv_batch *resolved = NULL;
  EXPECT(a->put(a->handle, S(bucket), keys, key_lens, (const uint8_t *const *)again, again_lens,
                ctxs, ctx_lens, 10, Q, 0, &resolved),
         RINGKV_OK);
  for (size_t i = 0; i < 10; i++) EXPECT(ringkv_batch_status(resolved, i), RINGKV_OK);
  ringkv_batch_free(resolved);
  ringkv_batch_free(b);
  b = NULL;
  EXPECT(a->get(a->handle, S(bucket), keys, key_lens, 10, Q, 0, &b), RINGKV_OK);
  size_t single = 0;
  for (size_t i = 0; i < 10; i++) {
    obj = NULL;
    if (ringkv_batch_object(b, i, &obj) == RINGKV_OK && obj != NULL &&
        ringkv_object_count(obj) == 1 && value_is(obj, 0, "again"))
      single++;
  }
  CHECK(single == 10);
  ringkv_batch_free(b);
  printf("%s: written with the contexts = %zu keys with 1 value\n", a->name, single);

  /* A per-item error: blind writes of one key until the sibling cap
   * refuses it; then a batch of that key and a fresh one: the first item
   * is RINGKV_SIBLINGS, the second OK. */
  const uint8_t *many[2] = {(const uint8_t *)"many", (const uint8_t *)"fresh"};
  size_t many_lens[2] = {4, 5};
  ringkv_result last = RINGKV_OK;
  for (int i = 0; i < 110 && last == RINGKV_OK; i++) {
    b = NULL;
    EXPECT(a->put(a->handle, S(bucket), many, many_lens, values, value_lens, NULL, NULL, 1, Q, 0,
                  &b),
           RINGKV_OK);
    last = b == NULL ? RINGKV_INTERNAL : ringkv_batch_status(b, 0);
    ringkv_batch_free(b);
  }
  CHECK(last == RINGKV_SIBLINGS);
  b = NULL;
  EXPECT(a->put(a->handle, S(bucket), many, many_lens, values, value_lens, NULL, NULL, 2, Q, 0, &b),
         RINGKV_OK);
  EXPECT(ringkv_batch_status(b, 0), RINGKV_SIBLINGS);
  CHECK(strstr(last_error(), "ringkv_batch_status") == last_error());
  const uint8_t *data0 = NULL;
  size_t len0 = 0;
  EXPECT(ringkv_batch_context(b, 0, &data0, &len0), RINGKV_SIBLINGS);
  CHECK(data0 == NULL && len0 == 0);
  EXPECT(ringkv_batch_status(b, 1), RINGKV_OK);
  ringkv_batch_free(b);
  printf("%s: per item: RINGKV_SIBLINGS beside RINGKV_OK\n", a->name);

  /* A context that is not one is checked before anything is sent: the
   * whole batch is refused. */
  const uint8_t *bad_ctx[2] = {NULL, (const uint8_t *)"not a context"};
  size_t bad_ctx_lens[2] = {0, 13};
  ringkv_batch *keep = (ringkv_batch *)&failures; /* a sentinel, never used */
  b = keep;
  EXPECT(a->put(a->handle, S(bucket), keys, key_lens, values, value_lens, bad_ctx, bad_ctx_lens,
                2, Q, 0, &b),
         RINGKV_INVALID_ARGUMENT);

  /* Refused whole, output untouched: a key twice, no keys, NULL arrays,
   * too many keys, an empty key. */
  const uint8_t *dup[2] = {keys[0], keys[0]};
  size_t dup_lens[2] = {key_lens[0], key_lens[0]};
  EXPECT(a->put(a->handle, S(bucket), dup, dup_lens, values, value_lens, NULL, NULL, 2, Q, 0, &b),
         RINGKV_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "twice") != NULL);
  EXPECT(a->put(a->handle, S(bucket), keys, key_lens, values, value_lens, NULL, NULL, 0, Q, 0, &b),
         RINGKV_INVALID_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), keys, key_lens, 0, Q, 0, &b), RINGKV_INVALID_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), NULL, NULL, 0, Q, 0, &b), RINGKV_INVALID_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), NULL, key_lens, 3, Q, 0, &b), RINGKV_NULL_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), keys, NULL, 3, Q, 0, &b), RINGKV_NULL_ARGUMENT);
  EXPECT(a->put(a->handle, S(bucket), NULL, NULL, values, value_lens, NULL, NULL, 3, Q, 0, &b),
         RINGKV_NULL_ARGUMENT);
  EXPECT(a->put(a->handle, S(bucket), keys, key_lens, NULL, value_lens, NULL, NULL, 3, Q, 0, &b),
         RINGKV_NULL_ARGUMENT);
  EXPECT(a->put(a->handle, S(bucket), keys, key_lens, values, value_lens, ctxs, NULL, 3, Q, 0, &b),
         RINGKV_NULL_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), keys, key_lens, RINGKV_MAX_BATCH_KEYS + 1, Q, 0, &b),
         RINGKV_INVALID_ARGUMENT);
  /* Two values of 8 MiB: over RINGKV_MAX_BATCH_BYTES together, though
   * each fits a single put. */
  size_t big_len = RINGKV_MAX_BATCH_BYTES / 2 + 1024;
  uint8_t *big = calloc(1, big_len);
  CHECK(big != NULL);
  if (big != NULL) {
    const uint8_t *bigs[2] = {big, big};
    size_t big_lens[2] = {big_len, big_len};
    EXPECT(a->put(a->handle, S(bucket), keys, key_lens, bigs, big_lens, NULL, NULL, 2, Q, 0, &b),
           RINGKV_INVALID_ARGUMENT);
    free(big);
  }
  size_t empty_len[1] = {0};
  EXPECT(a->get(a->handle, S(bucket), keys, empty_len, 1, Q, 0, &b), RINGKV_INVALID_ARGUMENT);
  EXPECT(a->get(NULL, S(bucket), keys, key_lens, 1, Q, 0, &b), RINGKV_NULL_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), keys, key_lens, 1, Q, 0, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), keys, key_lens, 1, 9, 0, &b), RINGKV_INVALID_ARGUMENT);
  EXPECT(a->put(a->handle, S(""), keys, key_lens, values, value_lens, NULL, NULL, 1, Q, 0, &b),
         RINGKV_INVALID_ARGUMENT);
  CHECK(b == keep);
  printf("%s: refused whole: a key twice, no keys, NULL arrays, over 15 MiB\n", a->name);
}

static void accessors_misuse(void) {
  const uint8_t *data = NULL;
  size_t len = 0;
  const ringkv_object *o = NULL;
  CHECK(ringkv_batch_len(NULL) == 0);
  EXPECT(ringkv_batch_status(NULL, 0), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_batch_status: batch is NULL") == 0);
  EXPECT(ringkv_batch_object(NULL, 0, &o), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_batch_context(NULL, 0, &data, &len), RINGKV_NULL_ARGUMENT);
  ringkv_batch_free(NULL);
}

int main(void) {
  accessors_misuse();
  ringkv_cluster *cluster = NULL;
  EXPECT(ringkv_cluster_new(3, RINGKV_TRANSPORT_TCP, &cluster), RINGKV_OK);
  if (cluster == NULL) return 1;
  api on_cluster = {"cluster", cluster, cl_get, cl_put};
  scenario(&on_cluster, "batch-cluster");

  ringkv_buf *addrs = NULL;
  EXPECT(ringkv_cluster_client_addrs(cluster, &addrs), RINGKV_OK);
  ringkv_client *client = NULL;
  EXPECT(ringkv_client_new((const char *)ringkv_buf_data(addrs), &client), RINGKV_OK);
  ringkv_buf_free(addrs);
  if (client != NULL) {
    api on_client = {"client", client, cn_get, cn_put};
    scenario(&on_client, "batch-client");
    /* A closed client refuses, and leaves the output alone. */
    EXPECT(ringkv_client_close(client), RINGKV_OK);
    ringkv_batch *b = NULL;
    EXPECT(ringkv_client_multi_get(client, S("b"), keys, key_lens, 1, Q, 0, &b), RINGKV_CLOSED);
    CHECK(b == NULL);
    ringkv_client_free(client);
  }
  ringkv_cluster_free(cluster);

  if (failures != 0) {
    fprintf(stderr, "batch: %d checks failed\n", failures);
    return 1;
  }
  printf("batch: all checks passed\n");
  return 0;
}
