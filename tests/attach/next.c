// dlsym(RTLD_NEXT) through the interceptor's dlsym hook. Built twice: -DLIB gives
// libnext.so, which wraps getpid() and finds the real one with dlsym(RTLD_NEXT); the
// program links it. Were RTLD_NEXT resolved relative to the interceptor (the hook's
// caller) instead of libnext, libnext would find its own getpid and recurse forever.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef LIB
pid_t getpid(void) {
  static pid_t (*real)(void);
  if (!real) real = (pid_t(*)(void))dlsym(RTLD_NEXT, "getpid");
  if (!real || (void *)real == (void *)getpid) return -1;
  return real() + 0;
}
#else
int main(void) {
  pid_t a = getpid(), b = (pid_t)syscall(SYS_getpid);
  void *p = dlsym(RTLD_NEXT, "getpid");  // from the program: libnext's (next after it)
  void *q = dlsym(RTLD_DEFAULT, "getpid");
  printf("%s %s\n", a == b ? "ok" : "bad", p == q ? "same" : "differs");
  return a == b ? 0 : 1;
}
#endif
