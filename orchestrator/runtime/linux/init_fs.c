/*
 * orch-init's paths inside the container's root and its mount ops (see init.h, init.c): the C twins
 * of rootfs.secure_join, mkdirs and touch, and of the mounts rootfs.py makes (root, spec mounts, device
 * nodes, pivot_root, read-only and masked paths). A path from the spec is always resolved inside the
 * root with every symlink on the way treated as if the root were "/".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "init.h"

#define LOCKED_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)

/* ---- paths inside the root (rootfs.secure_join, mkdirs, touch) ------------------------------------- */

/* root + unsafe with every symlink on the way resolved as if root were "/", ".." clamped at it */
static void secure_join(const char *base, const char *unsafe, char *out) {
    static char pending[PATH_BUF * 2], next[PATH_BUF * 2];
    char resolved[PATH_BUF] = "", full[PATH_BUF], target[PATH_BUF];
    size_t pos = 0;
    int links = 0;
    if ((size_t)snprintf(pending, sizeof pending, "%s", unsafe) >= sizeof pending)
        fail_msg("resolve", "", ENAMETOOLONG, "path too long");
    for (;;) {
        while (pending[pos] == '/')
            pos++;
        if (!pending[pos])
            break;
        size_t start = pos;
        while (pending[pos] && pending[pos] != '/')
            pos++;
        size_t len = pos - start;
        if (len == 1 && pending[start] == '.')
            continue;
        if (len == 2 && pending[start] == '.' && pending[start + 1] == '.') {
            char *slash = strrchr(resolved, '/');
            if (slash)
                *slash = 0;
            continue;
        }
        size_t rlen = strlen(resolved);
        if (rlen + len + 2 >= sizeof resolved)
            fail_msg("resolve", unsafe, ENAMETOOLONG, "path too long");
        path_fmt(full, "%s%s/%.*s", base, resolved, (int)len, pending + start);
        struct stat st;
        if (lstat(full, &st) < 0) {
            if (errno != ENOENT)
                fail_os(full);
            snprintf(resolved + rlen, sizeof resolved - rlen, "/%.*s", (int)len, pending + start);
            continue;
        }
        if (!S_ISLNK(st.st_mode)) {
            snprintf(resolved + rlen, sizeof resolved - rlen, "/%.*s", (int)len, pending + start);
            continue;
        }
        if (++links > 255)
            fail_msg("resolve", unsafe, ELOOP, "too many levels of symbolic links");
        ssize_t tl = readlink(full, target, sizeof target - 1);
        if (tl < 0)
            fail_os(full);
        target[tl] = 0;
        if (target[0] == '/')
            resolved[0] = 0;
        if ((size_t)snprintf(next, sizeof next, "%s/%s", target, pending + pos) >= sizeof next)
            fail_msg("resolve", unsafe, ENAMETOOLONG, "path too long");
        memcpy(pending, next, sizeof pending);
        pos = 0;
    }
    path_fmt(out, "%s%s", base, resolved);
}

static void mkdirs(const char *path) {
    char buf[PATH_BUF];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) < 0 && errno != EEXIST) {
                int err = errno;
                fail_msg("mkdir", path, err, "cannot create mount point: %s", strerror(err));
            }
            *p = c;
            if (!c)
                break;
        }
    }
    struct stat st;                  /* os.makedirs(exist_ok=True): an existing non-directory fails */
    if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode))
        fail_msg("mkdir", path, EEXIST, "cannot create mount point: %s", strerror(EEXIST));
}

static void parent_of(const char *path, char *out) {
    snprintf(out, PATH_BUF, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash && slash != out)
        *slash = 0;
    else if (slash)
        slash[1] = 0;
}

static void touch(const char *path) {
    char dir[PATH_BUF];
    parent_of(path, dir);
    mkdirs(dir);
    /* O_RDONLY: an existing file on a read-only root (readonlyRootfs) is a fine mount point */
    int fd = open(path, O_CREAT | O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        fail_msg("create", path, err, "cannot create mount point: %s", strerror(err));
    }
    close(fd);
}

/* bind-remount with flags; on EPERM keep the flags the kernel locked on the mount (rootfs._remount) */
void remount(const char *target, unsigned long flags) {
    if (mount(NULL, target, NULL, flags | MS_BIND | MS_REMOUNT, NULL) == 0)
        return;
    if (errno != EPERM)
        fail_sys("mount", target);
    struct statvfs sv;
    if (statvfs(target, &sv) < 0)
        fail_os(target);
    do_mount(NULL, target, NULL, flags | MS_BIND | MS_REMOUNT | (sv.f_flag & LOCKED_FLAGS), NULL);
}

/* ---- the mount ops ----------------------------------------------------------------------------- */

/* rootmount TARGET SRC FSTYPE FLAGS DATA BIND REMOUNT: one rootfs mount (rootfs.mount_rootfs) */
void op_rootmount(char **f) {
    char target[PATH_BUF];
    if (*f[0])
        secure_join(root, f[0], target);
    else
        snprintf(target, sizeof target, "%s", root);
    if (num(f[5])) {
        do_mount(f[1], target, NULL, num(f[3]), NULL);
        if (num(f[6]))
            remount(target, num(f[6]));
    } else {
        do_mount(f[1], target, f[2], num(f[3]), opt(f[4]));
    }
}

/* specmount KIND SRC DEST FSTYPE FLAGS DATA REMOUNT PROPAGATION: one of the spec's mounts
 * (rootfs.mount_one); KIND is bind, cgroup or fs; a bind's SRC is absolute already */
void op_specmount(char **f) {
    char dest[PATH_BUF];
    secure_join(root, f[2], dest);
    unsigned long flags = num(f[4]), again = num(f[6]);
    if (!strcmp(f[0], "bind")) {
        struct stat st;
        if (stat(f[1], &st) < 0) {
            int err = errno;
            fail_msg("stat", f[1], err, "bind source missing: %s", strerror(err));
        }
        if (S_ISDIR(st.st_mode))
            mkdirs(dest);
        else
            touch(dest);
        do_mount(f[1], dest, NULL, flags, NULL);
        if (again)
            remount(dest, again);
    } else if (!strcmp(f[0], "cgroup")) {
        /* the unified hierarchy, rooted at the container's cgroup by its cgroup namespace */
        mkdirs(dest);
        do_mount("cgroup2", dest, "cgroup2", flags, NULL);
    } else {
        mkdirs(dest);
        if (mount(f[1], dest, f[3], flags, opt(f[5])) < 0) {
            if (strcmp(f[3], "sysfs") || errno != EPERM)
                fail_sys("mount", dest);
            /* sysfs of a network namespace we do not own: bind the host's */
            do_mount("/sys", dest, NULL, MS_BIND | MS_REC, NULL);
            remount(dest, again);
        }
    }
    if (num(f[7]))
        do_mount(NULL, dest, NULL, num(f[7]), NULL);
}

/* mknod PATH TYPE MAJOR MINOR MODE UID GID: a device node; the last component is never followed */
void op_mknod(char **f) {
    char where[PATH_BUF], parent[PATH_BUF], dest[PATH_BUF];
    const char *name = strrchr(f[0], '/');
    name = name ? name + 1 : f[0];
    if (!*name || !strcmp(name, ".") || !strcmp(name, "..")) {
        secure_join(root, f[0], dest);
        parent_of(dest, parent);
        mkdirs(parent);
    } else {
        snprintf(where, sizeof where, "%.*s", (int)(name - f[0]), f[0]);
        secure_join(root, where, parent);
        mkdirs(parent);
        path_fmt(dest, "%s/%s", parent, name);
    }
    struct stat st;
    if (lstat(dest, &st) == 0 && unlink(dest) < 0)
        fail_os(dest);
    mode_t kind = f[1][0] == 'b' ? S_IFBLK : f[1][0] == 'p' ? S_IFIFO : S_IFCHR;
    mode_t mode = (mode_t)num(f[4]) & 07777;
    if (mknod(dest, mode | kind, makedev(num(f[2]), num(f[3]))) < 0 || chmod(dest, mode) < 0 ||
        chown(dest, (uid_t)num(f[5]), (gid_t)num(f[6])) < 0) {
        int err = errno;
        fail_msg("mknod", dest, err, "cannot create device: %s", strerror(err));
    }
}

/* symlink TARGET LINK: made unless something is there already */
void op_symlink(char **f) {
    char where[PATH_BUF], parent[PATH_BUF], dest[PATH_BUF];
    const char *name = strrchr(f[1], '/');
    name = name ? name + 1 : f[1];
    snprintf(where, sizeof where, "%.*s", (int)(name - f[1]), f[1]);
    secure_join(root, where, parent);
    path_fmt(dest, "%s/%s", parent, name);
    struct stat st;
    if (lstat(dest, &st) < 0 && symlink(f[0], dest) < 0)
        fail_os(f[0]);                       /* as os.symlink's OSError: the target is its filename */
}

void write_file(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    size_t len = strlen(value);
    if (fd < 0 || write(fd, value, len) != (ssize_t)len) {
        int err = errno;
        char quoted[512];
        fail_msg("write", path, err, "cannot write %s: %s", py_repr(value, quoted, sizeof quoted), strerror(err));
    }
    close(fd);
}

/* pivot_root(".", ".") with the old root stacked on the new one, then detached (rootfs.pivot) */
void op_pivot(void) {
    int old_root = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (old_root < 0 || chdir(root) < 0)
        fail_os(root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        fail_sys("pivot_root", ".");
    if (fchdir(old_root) < 0)
        fail_os(root);
    do_mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL);
    if (umount2(".", MNT_DETACH) < 0)
        fail_sys("umount2", ".");
    close(old_root);
    if (chdir("/") < 0)
        fail_os("/");
}

void op_readonly(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0)
        return;
    do_mount(path, path, NULL, MS_BIND | MS_REC, NULL);
    remount(path, MS_RDONLY | MS_REC);
}

void op_mask(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0)
        return;
    if (S_ISDIR(st.st_mode))
        do_mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL);
    else
        do_mount("/dev/null", path, NULL, MS_BIND, NULL);
}

