/* Objects with siblings and a causal context (issue [16]): a get that
 * returns every value and the context, and puts and deletes that take the
 * context back, so that a C program resolves siblings with its own merge
 * and deletes under the default policy (SIBLINGS). Before, a get of a key
 * with siblings returned only RINGKV_SIBLINGS, and a blind delete left
 * the values beside its tombstone.
 *
 * Runs on an embedded 3-node cluster over TCP, through the cluster handle
 * and through a client connection to its nodes; prints "objects: all
 * checks passed" and exits 0 only when every check holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ringkv.h"

typedef ringkv_result (*get_object_fn)(const void *, const uint8_t *, size_t, const uint8_t *,
                                       size_t, uint32_t, uint32_t, ringkv_object **);
typedef ringkv_result (*put_ctx_fn)(const void *, const uint8_t *, size_t, const uint8_t *,
                                    size_t, const uint8_t *, size_t, const uint8_t *, size_t,
                                    uint32_t, uint32_t, ringkv_buf **);
typedef ringkv_result (*delete_ctx_fn)(const void *, const uint8_t *, size_t, const uint8_t *,
                                       size_t, const uint8_t *, size_t, uint32_t, uint32_t,
                                       ringkv_buf **);

typedef struct {
  const char *name;
  const void *handle;
  get_object_fn get;
  put_ctx_fn put;
  delete_ctx_fn del;
} api;

static ringkv_result cl_get(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                            size_t kl, uint32_t r, uint32_t t, ringkv_object **o) {
  return ringkv_cluster_get_object((const ringkv_cluster *)h, b, bl, k, kl, r, t, o);
}
static ringkv_result cl_put(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                            size_t kl, const uint8_t *v, size_t vl, const uint8_t *c, size_t cl,
                            uint32_t w, uint32_t t, ringkv_buf **oc) {
  return ringkv_cluster_put_ctx((const ringkv_cluster *)h, b, bl, k, kl, v, vl, c, cl, w, t, oc);
}
static ringkv_result cl_del(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                            size_t kl, const uint8_t *c, size_t cl, uint32_t w, uint32_t t,
                            ringkv_buf **oc) {
  return ringkv_cluster_delete_ctx((const ringkv_cluster *)h, b, bl, k, kl, c, cl, w, t, oc);
}
static ringkv_result cn_get(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                            size_t kl, uint32_t r, uint32_t t, ringkv_object **o) {
  return ringkv_client_get_object((const ringkv_client *)h, b, bl, k, kl, r, t, o);
}
static ringkv_result cn_put(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                            size_t kl, const uint8_t *v, size_t vl, const uint8_t *c, size_t cl,
                            uint32_t w, uint32_t t, ringkv_buf **oc) {
  return ringkv_client_put_ctx((const ringkv_client *)h, b, bl, k, kl, v, vl, c, cl, w, t, oc);
}
static ringkv_result cn_del(const void *h, const uint8_t *b, size_t bl, const uint8_t *k,
                            size_t kl, const uint8_t *c, size_t cl, uint32_t w, uint32_t t,
                            ringkv_buf **oc) {
  return ringkv_client_delete_ctx((const ringkv_client *)h, b, bl, k, kl, c, cl, w, t, oc);
}

#define Q RINGKV_CONSISTENCY_QUORUM

/* Reads bucket/key at QUORUM; NULL (and a failure counted) on an error. */
static ringkv_object *read_object(const api *a, const char *bucket, const char *key) {
  ringkv_object *o = NULL;
  ringkv_result r = a->get(a->handle, S(bucket), S(key), Q, 0, &o);
  if (r != RINGKV_OK) {
    failures++;
    fprintf(stderr, "%s: get_object %s/%s: %s: %s\n", a->name, bucket, key,
            ringkv_result_name(r), last_error());
    return NULL;
  }
  return o;
}

/* Whether value i of o is `want`. */
static int value_is(const ringkv_object *o, size_t i, const char *want) {
  const uint8_t *data = NULL;
  size_t len = 0;
  if (ringkv_object_value(o, i, &data, &len) != RINGKV_OK) return 0;
  return len == strlen(want) && memcmp(data, want, len) == 0;
}

/* Whether o holds exactly the values a and b, in either order. */
static int holds_pair(const ringkv_object *o, const char *a, const char *b) {
  return ringkv_object_count(o) == 2 && ((value_is(o, 0, a) && value_is(o, 1, b)) ||
                                         (value_is(o, 0, b) && value_is(o, 1, a)));
}

static void scenario(const api *a, const char *bucket) {
  const uint8_t *ctx = NULL;
  size_t ctx_len = 0;

  /* A key never written: found 0, count 0, an empty context. */
  ringkv_object *o = read_object(a, bucket, "never");
  CHECK(o != NULL && ringkv_object_found(o) == 0 && ringkv_object_count(o) == 0);
  EXPECT(ringkv_object_context(o, &ctx, &ctx_len), RINGKV_OK);
  CHECK(ctx_len == 0);
  ringkv_object_free(o);

  /* Two blind writes: two siblings, both readable. */
  EXPECT(a->put(a->handle, S(bucket), S("k"), S("apple"), NULL, 0, Q, 0, NULL), RINGKV_OK);
  EXPECT(a->put(a->handle, S(bucket), S("k"), S("pear"), NULL, 0, Q, 0, NULL), RINGKV_OK);
  o = read_object(a, bucket, "k");
  CHECK(o != NULL && ringkv_object_found(o) == 1);
  CHECK(holds_pair(o, "apple", "pear"));
  printf("%s: two blind puts = %zu siblings\n", a->name, ringkv_object_count(o));

  /* Resolve with a merge of our choosing, written with the context. */
  EXPECT(ringkv_object_context(o, &ctx, &ctx_len), RINGKV_OK);
  CHECK(ctx_len > 0);
  ringkv_buf *stored = NULL;
  EXPECT(a->put(a->handle, S(bucket), S("k"), S("apple+pear"), ctx, ctx_len, Q, 0, &stored),
         RINGKV_OK);
  CHECK(stored != NULL && ringkv_buf_len(stored) > 0);
  ringkv_object_free(o);
  o = read_object(a, bucket, "k");
  CHECK(o != NULL && ringkv_object_count(o) == 1 && value_is(o, 0, "apple+pear"));
  printf("%s: resolved = %zu value\n", a->name, ringkv_object_count(o));

  /* A write with the context the last write returned replaces it too. */
  EXPECT(a->put(a->handle, S(bucket), S("k"), S("third"), ringkv_buf_data(stored),
                ringkv_buf_len(stored), Q, 0, NULL),
         RINGKV_OK);
  ringkv_buf_free(stored);
  ringkv_object_free(o);
  o = read_object(a, bucket, "k");
  CHECK(o != NULL && ringkv_object_count(o) == 1 && value_is(o, 0, "third"));

  /* Delete with the context: no value left, and the plain get agrees. */
  EXPECT(ringkv_object_context(o, &ctx, &ctx_len), RINGKV_OK);
  EXPECT(a->del(a->handle, S(bucket), S("k"), ctx, ctx_len, Q, 0, NULL), RINGKV_OK);
  ringkv_object_free(o);
  o = read_object(a, bucket, "k");
  CHECK(o != NULL && ringkv_object_count(o) == 0 && ringkv_object_found(o) == 0);
  printf("%s: after delete with context = %zu values\n", a->name, ringkv_object_count(o));
  ringkv_object_free(o);

  /* A blind delete beside a value: a sibling that is a delete, which
   * ringkv_object_value reports as RINGKV_NOT_FOUND. */
  EXPECT(a->put(a->handle, S(bucket), S("d"), S("kept"), NULL, 0, Q, 0, NULL), RINGKV_OK);
  EXPECT(a->del(a->handle, S(bucket), S("d"), NULL, 0, Q, 0, NULL), RINGKV_OK);
  o = read_object(a, bucket, "d");
  CHECK(o != NULL && ringkv_object_count(o) == 2);
  int deletes = 0, values = 0;
  for (size_t i = 0; i < ringkv_object_count(o); i++) {
    const uint8_t *data = (const uint8_t *)"untouched";
    size_t len = 99;
    ringkv_result r = ringkv_object_value(o, i, &data, &len);
    if (r == RINGKV_NOT_FOUND) {
      deletes++;
      CHECK(len == 99 && memcmp(data, "untouched", 9) == 0);
    } else if (r == RINGKV_OK && len == 4 && memcmp(data, "kept", 4) == 0) {
      values++;
    }
  }
  CHECK(deletes == 1 && values == 1);
  printf("%s: blind delete beside a value = %d value, %d delete\n", a->name, values, deletes);
  EXPECT(ringkv_object_context(o, &ctx, &ctx_len), RINGKV_OK);
  EXPECT(a->del(a->handle, S(bucket), S("d"), ctx, ctx_len, Q, 0, NULL), RINGKV_OK);
  ringkv_object_free(o);
  o = read_object(a, bucket, "d");
  CHECK(o != NULL && ringkv_object_count(o) == 0);
  ringkv_object_free(o);

  /* Past the sibling cap, a blind put is RINGKV_SIBLINGS; one with the
   * context resolves the lot. */
  int refused_at = -1;
  for (int i = 0; i < 110 && refused_at < 0; i++) {
    char v[32];
    snprintf(v, sizeof v, "blind %d", i);
    ringkv_result r = a->put(a->handle, S(bucket), S("many"), S(v), NULL, 0, Q, 0, NULL);
    if (r == RINGKV_SIBLINGS) {
      refused_at = i;
    } else if (r != RINGKV_OK) {
      failures++;
      fprintf(stderr, "%s: blind put %d: %s: %s\n", a->name, i, ringkv_result_name(r),
              last_error());
      break;
    }
  }
  /* Each replica enforces the cap on what it holds; a QUORUM write may
   * be coordinated by one that missed an earlier write, so the refusal
   * comes at the 100th sibling or a few after. */
  CHECK(refused_at >= 100 && refused_at <= 105);
  o = read_object(a, bucket, "many");
  CHECK(o != NULL && ringkv_object_count(o) >= 100 &&
        ringkv_object_count(o) <= (size_t)refused_at);
  EXPECT(ringkv_object_context(o, &ctx, &ctx_len), RINGKV_OK);
  EXPECT(a->put(a->handle, S(bucket), S("many"), S("one"), ctx, ctx_len, Q, 0, NULL), RINGKV_OK);
  ringkv_object_free(o);
  o = read_object(a, bucket, "many");
  CHECK(o != NULL && ringkv_object_count(o) == 1 && value_is(o, 0, "one"));
  ringkv_object_free(o);
  printf("%s: blind puts refused past sibling 100, resolved with the context\n", a->name);

  /* Misuse: NULL handle and outputs, bad lengths, bad levels, too-long
   * timeouts, a context that is not one; outputs left alone. */
  ringkv_object *keep = (ringkv_object *)&failures; /* a sentinel, never used */
  o = keep;
  EXPECT(a->get(NULL, S(bucket), S("k"), Q, 0, &o), RINGKV_NULL_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), S("k"), Q, 0, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(a->get(a->handle, NULL, 3, S("k"), Q, 0, &o), RINGKV_NULL_ARGUMENT);
  EXPECT(a->get(a->handle, S(""), S("k"), Q, 0, &o), RINGKV_INVALID_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), S(""), Q, 0, &o), RINGKV_INVALID_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), S("k"), 9, 0, &o), RINGKV_INVALID_ARGUMENT);
  EXPECT(a->get(a->handle, S(bucket), S("k"), Q, RINGKV_MAX_TIMEOUT_MS + 1, &o),
         RINGKV_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "timeout_ms") != NULL);
  CHECK(o == keep);
  ringkv_buf *sentinel = (ringkv_buf *)&failures;
  stored = sentinel;
  EXPECT(a->put(NULL, S(bucket), S("k"), S("v"), NULL, 0, Q, 0, &stored), RINGKV_NULL_ARGUMENT);
  EXPECT(a->put(a->handle, S(bucket), S("k"), S("v"), NULL, 5, Q, 0, &stored),
         RINGKV_NULL_ARGUMENT);
  CHECK(strstr(last_error(), "context is NULL") != NULL);
  EXPECT(a->put(a->handle, S(bucket), S("k"), NULL, 1, NULL, 0, Q, 0, &stored),
         RINGKV_NULL_ARGUMENT);
  EXPECT(a->put(a->handle, S(bucket), S("k"), S("v"), NULL, 0, 7, 0, &stored),
         RINGKV_INVALID_ARGUMENT);
  EXPECT(a->put(a->handle, S(bucket), S("k"), S("v"), S("not a context"), Q, 0, &stored),
         RINGKV_INVALID_ARGUMENT);
  EXPECT(a->del(NULL, S(bucket), S("k"), NULL, 0, Q, 0, &stored), RINGKV_NULL_ARGUMENT);
  EXPECT(a->del(a->handle, S(bucket), S("k"), NULL, 5, Q, 0, &stored), RINGKV_NULL_ARGUMENT);
  EXPECT(a->del(a->handle, S(""), S("k"), NULL, 0, Q, 0, &stored), RINGKV_INVALID_ARGUMENT);
  EXPECT(a->del(a->handle, S(bucket), S("k"), NULL, 0, Q, RINGKV_MAX_TIMEOUT_MS + 1, &stored),
         RINGKV_INVALID_ARGUMENT);
  CHECK(stored == sentinel);
}

static void accessors_misuse(void) {
  const uint8_t *data = NULL;
  size_t len = 0;
  CHECK(ringkv_object_count(NULL) == 0);
  CHECK(ringkv_object_found(NULL) == 0);
  EXPECT(ringkv_object_value(NULL, 0, &data, &len), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_object_value: object is NULL") == 0);
  EXPECT(ringkv_object_context(NULL, &data, &len), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_object_context: object is NULL") == 0);
  ringkv_object_free(NULL);
}

int main(void) {
  accessors_misuse();
  ringkv_cluster *cluster = NULL;
  EXPECT(ringkv_cluster_new(3, RINGKV_TRANSPORT_TCP, &cluster), RINGKV_OK);
  if (cluster == NULL) return 1;
  api on_cluster = {"cluster", cluster, cl_get, cl_put, cl_del};
  scenario(&on_cluster, "objects-cluster");

  /* Out-of-range index and NULL outputs on a live object. */
  ringkv_object *o = read_object(&on_cluster, "objects-cluster", "many");
  if (o != NULL) {
    const uint8_t *data = NULL;
    size_t len = 0;
    EXPECT(ringkv_object_value(o, 1, &data, &len), RINGKV_INVALID_ARGUMENT);
    CHECK(strstr(last_error(), "index 1 is not below the object's 1 values") != NULL);
    EXPECT(ringkv_object_value(o, 0, NULL, &len), RINGKV_NULL_ARGUMENT);
    EXPECT(ringkv_object_value(o, 0, &data, NULL), RINGKV_NULL_ARGUMENT);
    EXPECT(ringkv_object_context(o, NULL, &len), RINGKV_NULL_ARGUMENT);
    EXPECT(ringkv_object_context(o, &data, NULL), RINGKV_NULL_ARGUMENT);
    CHECK(data == NULL && len == 0);
    ringkv_object_free(o);
  }

  ringkv_buf *addrs = NULL;
  EXPECT(ringkv_cluster_client_addrs(cluster, &addrs), RINGKV_OK);
  ringkv_client *client = NULL;
  EXPECT(ringkv_client_new((const char *)ringkv_buf_data(addrs), &client), RINGKV_OK);
  ringkv_buf_free(addrs);
  if (client != NULL) {
    api on_client = {"client", client, cn_get, cn_put, cn_del};
    scenario(&on_client, "objects-client");
    /* A closed client refuses, and leaves the output alone. */
    EXPECT(ringkv_client_close(client), RINGKV_OK);
    o = NULL;
    EXPECT(ringkv_client_get_object(client, S("b"), S("k"), Q, 0, &o), RINGKV_CLOSED);
    CHECK(o == NULL);
    EXPECT(ringkv_client_put_ctx(client, S("b"), S("k"), S("v"), NULL, 0, Q, 0, NULL),
           RINGKV_CLOSED);
    EXPECT(ringkv_client_delete_ctx(client, S("b"), S("k"), NULL, 0, Q, 0, NULL), RINGKV_CLOSED);
    ringkv_client_free(client);
  }
  ringkv_cluster_free(cluster);

  if (failures != 0) {
    fprintf(stderr, "objects: %d checks failed\n", failures);
    return 1;
  }
  printf("objects: all checks passed\n");
  return 0;
}
