/* ringkv_version(), ringkv_abi_version() and the header's version macros
 * agree: the library linked is the one the header describes. Prints
 * "version: all checks passed" and exits 0 only when every check holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ringkv.h"

int main(void) {
  const char *v = ringkv_version();
  CHECK(v != NULL);
  char want[64];
  snprintf(want, sizeof want, "%u.%u.%u", (unsigned)RINGKV_VERSION_MAJOR,
           (unsigned)RINGKV_VERSION_MINOR, (unsigned)RINGKV_VERSION_PATCH);
  CHECK(v != NULL && strcmp(v, want) == 0);
  /* Static: the same pointer every time, and nothing to free. */
  CHECK(ringkv_version() == v);
  CHECK(ringkv_abi_version() == RINGKV_ABI_VERSION);
  CHECK(RINGKV_ABI_VERSION >= 1);
  /* A call that does not return a result leaves the last message alone. */
  CHECK(strcmp(last_error(), "") == 0);
  printf("version: %s (ABI %u)\n", v, (unsigned)ringkv_abi_version());
  if (failures != 0) {
    fprintf(stderr, "version: %d checks failed\n", failures);
    return 1;
  }
  printf("version: all checks passed\n");
  return 0;
}
