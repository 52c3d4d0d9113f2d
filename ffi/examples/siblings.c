/* Siblings and causal contexts from C: two writers put a shopping cart
 * blind (as two clients that did not see each other would), a reader
 * finds both versions as siblings, merges them, and writes the merge with
 * the object's context, which replaces both; then deletes the cart with
 * the context, which deletes it for good.
 *
 * Build (from the repository root, after cargo build --release -p ringkv-ffi):
 *   cc -Wall -Wextra -Werror -I ffi/include ffi/examples/siblings.c \
 *      target/release/libringkv_ffi.a -lstdc++ -lpthread -ldl -lm -o siblings
 * Prints what it does; exits 0 when every step did what it should. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringkv.h"

#define B(text) (const uint8_t *)(text), strlen(text)
#define Q RINGKV_CONSISTENCY_QUORUM

static int fail(const char *what, ringkv_result r) {
  char msg[512];
  size_t len = 0;
  if (ringkv_last_error(msg, sizeof msg, &len) != RINGKV_OK) msg[0] = '\0';
  fprintf(stderr, "%s: %s: %s\n", what, ringkv_result_name(r), msg);
  return 1;
}

int main(void) {
  ringkv_cluster *cluster = NULL;
  ringkv_result r = ringkv_cluster_new(3, RINGKV_TRANSPORT_MEMORY, &cluster);
  if (r != RINGKV_OK) return fail("cluster", r);
  int status = 1;
  ringkv_object *cart = NULL;

  /* Two blind writes (no context): neither replaces the other. */
  r = ringkv_cluster_put_ctx(cluster, B("carts"), B("ada"), B("milk"), NULL, 0, Q, 0, NULL);
  if (r == RINGKV_OK)
    r = ringkv_cluster_put_ctx(cluster, B("carts"), B("ada"), B("eggs"), NULL, 0, Q, 0, NULL);
  if (r != RINGKV_OK) { fail("put", r); goto out; }

  r = ringkv_cluster_get_object(cluster, B("carts"), B("ada"), Q, 0, &cart);
  if (r != RINGKV_OK) { fail("get_object", r); goto out; }
  size_t n = ringkv_object_count(cart);
  printf("siblings: carts/ada has %zu values\n", n);

  /* Merge: every item of every sibling, comma-separated. */
  char merged[256] = "";
  for (size_t i = 0; i < n; i++) {
    const uint8_t *data;
    size_t len;
    r = ringkv_object_value(cart, i, &data, &len);
    if (r == RINGKV_NOT_FOUND) continue; /* a concurrent delete: nothing to keep */
    if (r != RINGKV_OK) { fail("value", r); goto out; }
    if (merged[0] != '\0') strncat(merged, ",", sizeof merged - strlen(merged) - 1);
    strncat(merged, (const char *)data,
            len < sizeof merged - strlen(merged) - 1 ? len : sizeof merged - strlen(merged) - 1);
  }
  const uint8_t *ctx;
  size_t ctx_len;
  r = ringkv_object_context(cart, &ctx, &ctx_len);
  if (r == RINGKV_OK)
    r = ringkv_cluster_put_ctx(cluster, B("carts"), B("ada"), B(merged), ctx, ctx_len, Q, 0,
                               NULL);
  if (r != RINGKV_OK) { fail("put merge", r); goto out; }
  ringkv_object_free(cart);
  cart = NULL;

  r = ringkv_cluster_get_object(cluster, B("carts"), B("ada"), Q, 0, &cart);
  if (r != RINGKV_OK || ringkv_object_count(cart) != 1) { fail("get merged", r); goto out; }
  const uint8_t *data;
  size_t len;
  r = ringkv_object_value(cart, 0, &data, &len);
  if (r != RINGKV_OK) { fail("value", r); goto out; }
  printf("siblings: resolved to 1 value of %zu bytes\n", len);

  /* Delete with the context: the plain get then finds nothing. */
  r = ringkv_object_context(cart, &ctx, &ctx_len);
  if (r == RINGKV_OK)
    r = ringkv_cluster_delete_ctx(cluster, B("carts"), B("ada"), ctx, ctx_len, Q, 0, NULL);
  if (r != RINGKV_OK) { fail("delete", r); goto out; }
  ringkv_buf *value = NULL;
  r = ringkv_cluster_get(cluster, B("carts"), B("ada"), Q, &value);
  printf("siblings: get after delete = %s\n", ringkv_result_name(r));
  ringkv_buf_free(value);
  if (r != RINGKV_NOT_FOUND) goto out;
  status = 0;
  printf("all checks passed\n");
out:
  ringkv_object_free(cart);
  ringkv_cluster_free(cluster);
  return status;
}
