/* The disk as a power cut would leave it: after every fsync/fdatasync of an SQLite database
 * file (*.db) or its write-ahead log (*.db-wal), copy that file into $AMR_FSYNC_IMAGE. Each copy
 * is then the file as of its last sync, which is all a power cut is sure to keep.
 * Loaded with LD_PRELOAD by tests/integration/test_durability.py. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int wanted(const char *base) {
    size_t n = strlen(base);
    return (n > 3 && strcmp(base + n - 3, ".db") == 0) ||
           (n > 7 && strcmp(base + n - 7, ".db-wal") == 0);
}

static void image(int fd) {
    const char *dir = getenv("AMR_FSYNC_IMAGE");
    char link[64], path[PATH_MAX], tmp[PATH_MAX], dst[PATH_MAX], buf[65536];
    if (dir == NULL) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!wanted(base)) return;
    snprintf(dst, sizeof dst, "%s/%s", dir, base);
    snprintf(tmp, sizeof tmp, "%s/.%s.part", dir, base);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) return;
    off_t offset = 0;
    ssize_t got;
    while ((got = pread(fd, buf, sizeof buf, offset)) > 0) {
        if (write(out, buf, (size_t)got) != got) break;
        offset += got;
    }
    close(out);
    rename(tmp, dst);
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    if (rc == 0) image(fd);
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    if (rc == 0) image(fd);
    return rc;
}
