/* Scans from C (issue [16]): a cursor object that gives a bucket's keys
 * one at a time. 500 keys written through the cluster handle come back
 * exactly once each, through the cluster and through a client, with
 * small pages, default pages and the largest; deleted keys are not
 * listed; an empty bucket is done at once; and misuse is refused.
 * Prints "scan: all checks passed" and exits 0 only when every check
 * holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ringkv.h"

#define KEYS 500
#define Q RINGKV_CONSISTENCY_QUORUM

/* Counts each key-NNN listed in seen[]; returns the number of keys given,
 * or -1 on an error (counted as a failure). */
static long scan_all(ringkv_scan *scan, int *seen) {
  const uint8_t *key = NULL;
  size_t len = 0;
  int done = 0;
  long n = 0;
  ringkv_result r;
  memset(seen, 0, KEYS * sizeof *seen);
  while ((r = ringkv_scan_next(scan, &key, &len, &done)) == RINGKV_OK && !done) {
    n++;
    int i = -1;
    /* key is not NUL-terminated: copy it before atoi. */
    char text[8] = {0};
    if (len == 7 && memcmp(key, "key-", 4) == 0) {
      memcpy(text, key, 7);
      i = atoi(text + 4);
    }
    if (i >= 0 && i < KEYS) {
      seen[i]++;
    } else {
      failures++;
      fprintf(stderr, "scan gave an unexpected key of %zu bytes\n", len);
    }
  }
  if (r != RINGKV_OK) {
    failures++;
    fprintf(stderr, "scan_next: %s: %s\n", ringkv_result_name(r), last_error());
    return -1;
  }
  /* Done stays done, and leaves the key outputs alone. */
  key = (const uint8_t *)"x";
  EXPECT(ringkv_scan_next(scan, &key, &len, &done), RINGKV_OK);
  CHECK(done == 1 && key[0] == 'x');
  CHECK((long)ringkv_scan_count(scan) == n);
  return n;
}

/* Whether every key i of [0, KEYS) was seen exactly want(i) times. */
static int each_once(const int *seen, int skip_below) {
  for (int i = 0; i < KEYS; i++) {
    int want = i < skip_below ? 0 : 1;
    if (seen[i] != want) {
      fprintf(stderr, "key-%03d seen %d times, want %d\n", i, seen[i], want);
      return 0;
    }
  }
  return 1;
}

int main(void) {
  static int seen[KEYS];
  ringkv_cluster *cluster = NULL;
  EXPECT(ringkv_cluster_new(3, RINGKV_TRANSPORT_TCP, &cluster), RINGKV_OK);
  if (cluster == NULL) return 1;
  EXPECT(ringkv_cluster_set_bucket_policy(cluster, S("scanned"), RINGKV_POLICY_LWW), RINGKV_OK);
  for (int i = 0; i < KEYS; i++) {
    char key[16];
    snprintf(key, sizeof key, "key-%03d", i);
    EXPECT(ringkv_cluster_put(cluster, S("scanned"), S(key), S("v"), Q), RINGKV_OK);
  }
  /* Another bucket's keys are not listed. */
  EXPECT(ringkv_cluster_put(cluster, S("other"), S("key-000"), S("v"), Q), RINGKV_OK);

  static const uint32_t pages[] = {7, 0, RINGKV_MAX_SCAN_PAGE};
  for (size_t p = 0; p < sizeof pages / sizeof pages[0]; p++) {
    ringkv_scan *scan = NULL;
    EXPECT(ringkv_cluster_scan_new(cluster, S("scanned"), pages[p], Q, 0, &scan), RINGKV_OK);
    long n = scan_all(scan, seen);
    CHECK(n == KEYS && each_once(seen, 0));
    printf("scan: cluster, page %u: %ld keys, each once\n", (unsigned)pages[p], n);
    ringkv_scan_free(scan);
  }

  ringkv_buf *addrs = NULL;
  EXPECT(ringkv_cluster_client_addrs(cluster, &addrs), RINGKV_OK);
  ringkv_client *client = NULL;
  EXPECT(ringkv_client_new((const char *)ringkv_buf_data(addrs), &client), RINGKV_OK);
  ringkv_buf_free(addrs);
  if (client != NULL) {
    ringkv_scan *scan = NULL;
    EXPECT(ringkv_client_scan_new(client, S("scanned"), 13, Q, 2000, &scan), RINGKV_OK);
    long n = scan_all(scan, seen);
    CHECK(n == KEYS && each_once(seen, 0));
    printf("scan: client, page 13: %ld keys, each once\n", n);
    ringkv_scan_free(scan);

    /* Delete the first 20 (with a context: the plain delete reads it). */
    for (int i = 0; i < 20; i++) {
      char key[16];
      snprintf(key, sizeof key, "key-%03d", i);
      EXPECT(ringkv_client_delete(client, S("scanned"), S(key), Q), RINGKV_OK);
    }
    scan = NULL;
    EXPECT(ringkv_client_scan_new(client, S("scanned"), 50, Q, 0, &scan), RINGKV_OK);
    n = scan_all(scan, seen);
    CHECK(n == KEYS - 20 && each_once(seen, 20));
    printf("scan: after 20 deletes: %ld keys\n", n);
    ringkv_scan_free(scan);

    /* A closed client: the next page is refused, and the scan stays. */
    scan = NULL;
    EXPECT(ringkv_client_scan_new(client, S("scanned"), 10, Q, 0, &scan), RINGKV_OK);
    EXPECT(ringkv_client_close(client), RINGKV_OK);
    const uint8_t *key = NULL;
    size_t len = 0;
    int done = 7;
    EXPECT(ringkv_scan_next(scan, &key, &len, &done), RINGKV_CLOSED);
    CHECK(strncmp(last_error(), "ringkv_scan_next: ", 18) == 0);
    CHECK(key == NULL && len == 0 && done == 7);
    EXPECT(ringkv_scan_next(scan, &key, &len, &done), RINGKV_CLOSED);
    ringkv_scan_free(scan);
    ringkv_client_free(client);
  }

  /* An empty bucket is done at once. */
  ringkv_scan *scan = NULL;
  EXPECT(ringkv_cluster_scan_new(cluster, S("empty"), 0, 0, 0, &scan), RINGKV_OK);
  CHECK(scan_all(scan, seen) == 0);
  ringkv_scan_free(scan);
  printf("scan: an empty bucket: done at once\n");

  /* Misuse. */
  ringkv_scan *keep = (ringkv_scan *)&failures; /* a sentinel, never used */
  scan = keep;
  EXPECT(ringkv_cluster_scan_new(NULL, S("b"), 0, 0, 0, &scan), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_cluster_scan_new: cluster is NULL") == 0);
  EXPECT(ringkv_client_scan_new(NULL, S("b"), 0, 0, 0, &scan), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_client_scan_new: client is NULL") == 0);
  EXPECT(ringkv_cluster_scan_new(cluster, S("b"), 0, 0, 0, NULL), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_scan_new(cluster, NULL, 1, 0, 0, 0, &scan), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_cluster_scan_new(cluster, S(""), 0, 0, 0, &scan), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_scan_new(cluster, S("b"), RINGKV_MAX_SCAN_PAGE + 1, 0, 0, &scan),
         RINGKV_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "page_limit") != NULL);
  EXPECT(ringkv_cluster_scan_new(cluster, S("b"), 0, 9, 0, &scan), RINGKV_INVALID_ARGUMENT);
  EXPECT(ringkv_cluster_scan_new(cluster, S("b"), 0, 0, RINGKV_MAX_TIMEOUT_MS + 1, &scan),
         RINGKV_INVALID_ARGUMENT);
  CHECK(scan == keep);
  const uint8_t *key = NULL;
  size_t len = 0;
  int done = 0;
  EXPECT(ringkv_scan_next(NULL, &key, &len, &done), RINGKV_NULL_ARGUMENT);
  CHECK(strcmp(last_error(), "ringkv_scan_next: scan is NULL") == 0);
  scan = NULL;
  EXPECT(ringkv_cluster_scan_new(cluster, S("scanned"), 0, 0, 0, &scan), RINGKV_OK);
  EXPECT(ringkv_scan_next(scan, NULL, &len, &done), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_scan_next(scan, &key, NULL, &done), RINGKV_NULL_ARGUMENT);
  EXPECT(ringkv_scan_next(scan, &key, &len, NULL), RINGKV_NULL_ARGUMENT);
  CHECK(ringkv_scan_count(scan) == 0);
  /* Two scans of one handle go their own ways (one at level ALL). */
  ringkv_scan *all = NULL;
  EXPECT(ringkv_cluster_scan_new(cluster, S("scanned"), 0, RINGKV_CONSISTENCY_ALL, 0, &all),
         RINGKV_OK);
  EXPECT(ringkv_scan_next(scan, &key, &len, &done), RINGKV_OK);
  CHECK(done == 0 && ringkv_scan_count(scan) == 1);
  EXPECT(ringkv_scan_next(all, &key, &len, &done), RINGKV_OK);
  EXPECT(ringkv_scan_next(all, &key, &len, &done), RINGKV_OK);
  CHECK(done == 0 && ringkv_scan_count(all) == 2 && ringkv_scan_count(scan) == 1);
  ringkv_scan_free(all);
  ringkv_scan_free(scan);
  ringkv_scan_free(NULL);
  CHECK(ringkv_scan_count(NULL) == 0);
  ringkv_cluster_free(cluster);

  if (failures != 0) {
    fprintf(stderr, "scan: %d checks failed\n", failures);
    return 1;
  }
  printf("scan: all checks passed\n");
  return 0;
}
