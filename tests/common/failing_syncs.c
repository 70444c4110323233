/* Preloaded into a test's pushgate process (LD_PRELOAD): fsync and fdatasync
 * of the process fail with EIO while the file $PUSHGATE_TEST_FAILING_SYNCS/<pid>
 * exists, as they do on a disk that cannot write back what the page cache
 * holds. If that file names a part of a path, only syncs of files whose path
 * contains it fail (one kind of file, such as a snapshot being written).
 * Removing the file makes syncs succeed again, as Linux's next fsync after an
 * error does. While the file <pid>.hang exists there instead, the syncs do
 * not return at all, as on a disk that stopped answering. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void wait_while_hung(void) {
    const char *dir = getenv("PUSHGATE_TEST_FAILING_SYNCS");
    char trigger[4096];
    struct timespec tick = {0, 10 * 1000 * 1000};
    if (dir == NULL) {
        return;
    }
    snprintf(trigger, sizeof trigger, "%s/%d.hang", dir, (int)getpid());
    while (access(trigger, F_OK) == 0) {
        nanosleep(&tick, NULL);
    }
}

static int failing(int fd) {
    const char *dir = getenv("PUSHGATE_TEST_FAILING_SYNCS");
    char trigger[4096], only[4096], link[64], path[4096];
    int tf;
    ssize_t n;
    if (dir == NULL) {
        return 0;
    }
    snprintf(trigger, sizeof trigger, "%s/%d", dir, (int)getpid());
    tf = open(trigger, O_RDONLY | O_CLOEXEC);
    if (tf < 0) {
        return 0;
    }
    n = read(tf, only, sizeof only - 1);
    close(tf);
    if (n <= 0) {
        return 1; /* empty trigger: every sync fails */
    }
    only[n] = '\0';
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof path - 1);
    if (n < 0) {
        return 0;
    }
    path[n] = '\0';
    return strstr(path, only) != NULL;
}

int fsync(int fd) {
    static int (*real)(int);
    wait_while_hung();
    if (failing(fd)) {
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
    wait_while_hung();
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    return real(fd);
}
