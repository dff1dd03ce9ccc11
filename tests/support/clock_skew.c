/* Shift this process's wall clock (CLOCK_REALTIME and friends) by RHONE_TEST_CLOCK_SKEW seconds; monotonic clocks,
   and so every sleep and timeout, stay real. Loaded with LD_PRELOAD by tests/e2e/test_clock_skew_e2e.py into one
   node of a cluster (docs/multi-node.md, "Failure behaviour").

   Why not Debian's faketime (libfaketime 0.9.10): it breaks Python 3.11. With the monotonic clock faked,
   time.sleep and threading.Event.wait never return; with FAKETIME_DONT_FAKE_MONOTONIC=1, time.sleep raises
   OSError [Errno 22] (Python sleeps with an absolute clock_nanosleep on the monotonic clock, which libfaketime
   mis-shifts). A time namespace (`unshare --time`) offsets only the monotonic clocks, never the wall clock.

   Build: gcc -shared -fPIC -O2 -o clock_skew.so clock_skew.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long skew(void) {
    const char *value = getenv("RHONE_TEST_CLOCK_SKEW");
    return value ? atol(value) : 0;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "clock_gettime");
    int result = real(clock, ts);
    if (result == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE || clock == CLOCK_TAI))
        ts->tv_sec += skew();
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int result = clock_gettime(CLOCK_REALTIME, &ts);
    if (result == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return result;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
