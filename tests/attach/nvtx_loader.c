// Stands in for NVTX v3's loader inside an annotated program: reads
// NVTX_INJECTION64_PATH, loads it, calls InitializeInjectionNvtx2 with an export table
// whose core-module slots start as no-ops, then calls through the slots as
// nvtxRangePushA/Pop, nvtxRangePushEx and nvtxRangeStartA/End would. Between them it
// launches kernels on the (fake) driver through dlsym, as the CUDA runtime does.
//   nvtx_loader STEP...   push:NAME | pushex:NAME | pop | start:NAME | end | launch
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*fn_t)(void);
static fn_t slots[16];
static fn_t *table[16];

static int noop(void) { return -1; }
static int get_table(int module, fn_t ***out, unsigned *size) {
  if (module != 1) return 0;
  *out = table;
  *size = 16;
  return 1;
}
static struct {
  size_t size;
  int (*get)(int, fn_t ***, unsigned *);
} callbacks = {sizeof callbacks, get_table};
static const void *export_table(uint32_t id) { return id == 1 ? &callbacks : NULL; }

typedef struct {  // nvtxEventAttributes_t v3
  uint16_t version, size;
  uint32_t category;
  int32_t color_type;
  uint32_t color;
  int32_t payload_type, reserved0;
  uint64_t payload;
  int32_t message_type, pad;
  const char *message;
} attrs_t;

typedef int (*launch_t)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                        unsigned, void *, void **, void **);

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int i = 0; i < 16; i++) {
    slots[i] = (fn_t)noop;
    table[i] = &slots[i];
  }
  const char *path = getenv("NVTX_INJECTION64_PATH");
  void *inj = path ? dlopen(path, RTLD_NOW) : NULL;
  int (*init)(const void *(*)(uint32_t)) =
      inj ? (int (*)(const void *(*)(uint32_t)))dlsym(inj, "InitializeInjectionNvtx2") : NULL;
  printf("injected %d\n", init ? init(export_table) : -1);
  void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
  launch_t launch = cuda ? (launch_t)dlsym(cuda, "cuLaunchKernel") : NULL;
  uint64_t range = 0;
  for (int a = 1; a < argc; a++) {
    const char *s = argv[a];
    if (strncmp(s, "push:", 5) == 0) {
      ((int (*)(const char *))slots[9])(s + 5);
    } else if (strncmp(s, "pushex:", 7) == 0) {
      attrs_t at = {3, sizeof(attrs_t), 0, 0, 0, 0, 0, 0, 1, 0, s + 7};
      ((int (*)(const attrs_t *))slots[8])(&at);
    } else if (strcmp(s, "pop") == 0) {
      ((int (*)(void))slots[11])();
    } else if (strncmp(s, "start:", 6) == 0) {
      range = ((uint64_t(*)(const char *))slots[5])(s + 6);
    } else if (strcmp(s, "end") == 0) {
      ((void (*)(uint64_t))slots[7])(range);
    } else if (strcmp(s, "launch") == 0 && launch) {
      void *params[1] = {NULL};
      if (launch((void *)0xF00, 1, 1, 1, 32, 1, 1, 0, (void *)0x100, params, NULL)) return 3;
    }
  }
  printf("done\n");
  return 0;
}
