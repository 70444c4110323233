/* Preloaded into a test's pushgate process (LD_PRELOAD): every fsync and
 * fdatasync of the process fails with EIO while the file
 * $PUSHGATE_TEST_FAILING_SYNCS/<pid> exists, as they do on a disk that
 * cannot write back what the page cache holds. Removing the file makes
 * syncs succeed again, as Linux's next fsync after an error does. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *dir = getenv("PUSHGATE_TEST_FAILING_SYNCS");
    char path[4096];
    if (dir == NULL) {
        return 0;
    }
    snprintf(path, sizeof path, "%s/%d", dir, (int)getpid());
    return access(path, F_OK) == 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing()) {
        errno = EIO;
        return -1;
    }
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (failing()) {
        errno = EIO;
        return -1;
    }
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    return real(fd);
}
