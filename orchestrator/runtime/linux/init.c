/*
 * orch-init: the container init of a warm spare, in C (see spare.py; the plan it runs is initplan.py's).
 *
 * The spare monitor (orch-spare) unshares a pid namespace and posix_spawns this program from a sealed
 * memfd copy (forkclient.sealed_copy): PID 1 of the new namespace, with no page table worth copying
 * and no interpreter to tear down at execve. Ahead of any request it makes itself undumpable, creates network,
 * IPC and UTS namespaces, brings lo up, and waits. The fork server then sends it a create request
 * compiled into a flat list of ops (initplan.compile): the steps of init.container_init, in that order,
 * each op naming its step. Nothing here decides what a container gets; it only runs the list.
 *
 * fds: 0-2 the container's stdio, 3 the SOCK_SEQPACKET channel to its monitor (orch-spare, sparemon.c):
 * "accepted", "cgroup", then "ready" or an error report with the Python init's fields (message, op,
 * path, errno, step; NUL-separated), 4 the request pipe: an 8-byte
 * big-endian length, then the ops. An op is a little-endian u32 field count, then that many
 * NUL-terminated strings (used in place). Field 0 is the op's name, field 1 its step.
 *
 * usage: orch-init BASE_NICE     (the server's priority: see spare.fork)
 * Any failure is reported on the channel and ends the process: the command never runs after one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <grp.h>

#define CHAN 3
#define REQ 4
#define MAX_FIELDS 4096             /* per op: initplan.MAX_FIELDS */
#define MAX_REQUEST (64 << 20)
#define PATH_BUF 8192
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define RESOLVE_NO_MAGICLINKS 0x02
#define LOCKED_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)

static const char *step = "start";
static char root[PATH_BUF];          /* the container's root dir (op "root") */
static int fifo = -1;                /* the exec fifo: our read blocks until `start` writes */
static char **exec_argv, **exec_env; /* from op "exec", used once the fifo says go */

/* ---- error reports: "error", then message, op, path, errno and step, each NUL-terminated --------- */

static void __attribute__((noreturn)) fail_msg(const char *op, const char *path, int err, const char *fmt, ...) {
    char message[PATH_BUF + 4096], buf[sizeof message + PATH_BUF * 2 + 4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    int n = snprintf(buf, sizeof buf, "error%c%s%c%s%c%s%c%d%c%s", 0, message, 0, op, 0, path, 0, err, 0, step);
    if (n > 0)
        send(CHAN, buf, (size_t)(n < (int)sizeof buf ? n + 1 : (int)sizeof buf), MSG_NOSIGNAL);
    _exit(1);
}

/* a failed system call, worded as syscalls._check words it: "<op> failed: <strerror>" */
static void __attribute__((noreturn)) fail_sys(const char *op, const char *path) {
    int err = errno;
    fail_msg(op, path, err, "%s failed: %s", op, strerror(err));
}

/* an OSError in the Python init: "<step>: <strerror>", the op being the step */
static void __attribute__((noreturn)) fail_os(const char *path) {
    int err = errno;
    fail_msg(step, path, err, "%s: %s", step, strerror(err));
}

static void do_mount(const char *src, const char *target, const char *type, unsigned long flags,
                     const char *data) {
    if (mount(src, target, type, flags, data) < 0)
        fail_sys("mount", target);
}

/* s as python's repr() quotes a str (ASCII control characters escaped; other bytes kept), so a
 * message reads as the Python init's does */
static const char *py_repr(const char *s, char *out, size_t cap) {
    char quote = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    size_t n = 0;
    out[n++] = quote;
    for (; *s && n + 6 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\' || c == (unsigned char)quote) {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            out[n++] = '\\';
            out[n++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n++] = quote;
    out[n] = 0;
    return out;
}

static const char *opt(const char *s) { return *s ? s : NULL; }
static unsigned long num(const char *s) { return strtoul(s, NULL, 0); }

/* snprintf into a PATH_BUF, refusing (never truncating) a path that does not fit */
static void __attribute__((format(printf, 2, 3))) path_fmt(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_BUF, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_BUF)
        fail_msg("resolve", out, ENAMETOOLONG, "path too long");
}

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
static void remount(const char *target, unsigned long flags) {
    if (mount(NULL, target, NULL, flags | MS_BIND | MS_REMOUNT, NULL) == 0)
        return;
    if (errno != EPERM)
        fail_sys("mount", target);
    struct statvfs sv;
    if (statvfs(target, &sv) < 0)
        fail_os(target);
    do_mount(NULL, target, NULL, flags | MS_BIND | MS_REMOUNT | (sv.f_flag & LOCKED_FLAGS), NULL);
}

/* ---- the ops ----------------------------------------------------------------------------------------- */

/* rootmount TARGET SRC FSTYPE FLAGS DATA BIND REMOUNT: one rootfs mount (rootfs.mount_rootfs) */
static void op_rootmount(char **f) {
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
static void op_specmount(char **f) {
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
static void op_mknod(char **f) {
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
static void op_symlink(char **f) {
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

static void write_file(const char *path, const char *value) {
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
static void op_pivot(void) {
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

static void op_readonly(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0)
        return;
    do_mount(path, path, NULL, MS_BIND | MS_REC, NULL);
    remount(path, MS_RDONLY | MS_REC);
}

static void op_mask(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0)
        return;
    if (S_ISDIR(st.st_mode))
        do_mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL);
    else
        do_mount("/dev/null", path, NULL, MS_BIND, NULL);
}

static void loopback_up(void) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (sock < 0 || ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
        fail_os("");
    if (!(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
            fail_os("");
    }
    close(sock);
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* seccomp FLAGS HEX: the filter compiled by the API side (seccomp.compile_oci) */
static void op_seccomp(char **f) {
    size_t len = strlen(f[1]) / 2;
    if (!len || len % 8 || len / 8 > 4096)
        fail_msg("seccomp", "", 0, "bad seccomp program of %zu bytes", len);
    unsigned char *prog = malloc(len);
    if (!prog)
        fail_os("");
    for (size_t i = 0; i < len; i++) {       /* not sscanf: ~30x slower on a 60 kB program */
        int hi = hexval(f[1][2 * i]), lo = hexval(f[1][2 * i + 1]);
        if (hi < 0 || lo < 0)
            fail_msg("seccomp", "", EINVAL, "bad seccomp program: not hex");
        prog[i] = (unsigned char)(hi << 4 | lo);
    }
    struct sock_fprog fprog = {(unsigned short)(len / 8), (struct sock_filter *)prog};
    unsigned long flags = num(f[0]);
    long ret = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog);
    if (ret < 0 && errno == ENOSYS && flags == 0)
        ret = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
    if (ret < 0) {
        int err = errno;
        fail_msg("seccomp", "", err, "installing seccomp filter failed: %s", strerror(err));
    }
    free(prog);
}

static void checked_prctl(const char *what, int option, unsigned long a2, unsigned long a3) {
    if (prctl(option, a2, a3, 0, 0) < 0) {
        int err = errno;
        fail_msg(what, "", err, "%s failed: %s", what, strerror(err));
    }
}

/* user CAPS UID GID GIDS BOUNDING EFFECTIVE PERMITTED INHERITABLE AMBIENT LAST_CAP: user, groups and
 * capability sets in capabilities.apply's order (bounding first: it needs CAP_SETPCAP) */
static void op_user(char **f) {
    int caps = (int)num(f[0]);
    uid_t uid = (uid_t)num(f[1]);
    gid_t gid = (gid_t)num(f[2]), groups[4096];
    size_t ngroups = 0;
    for (char *p = f[3]; *p;) {
        char *end;
        unsigned long g = strtoul(p, &end, 10);
        if (end == p || (*end && *end != ',') || ngroups == 4096)
            fail_msg("setgroups", f[3], EINVAL, "bad supplementary group list");
        groups[ngroups++] = (gid_t)g;
        p = *end ? end + 1 : end;
    }
    unsigned long long bounding = strtoull(f[4], NULL, 0);
    unsigned int last = (unsigned int)num(f[9]);
    if (caps) {
        for (unsigned int cap = 0; cap <= last; cap++) {
            if (bounding & (1ULL << cap))
                continue;
            int held = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);     /* an error fails: never fail open */
            if (held < 0)
                checked_prctl("prctl(PR_CAPBSET_READ)", PR_CAPBSET_READ, cap, 0);
            if (held == 1 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
                char what[48];
                snprintf(what, sizeof what, "prctl(PR_CAPBSET_DROP, %u)", cap);
                checked_prctl(what, PR_CAPBSET_DROP, cap, 0);
            }
        }
        checked_prctl("prctl(PR_SET_KEEPCAPS, 1)", PR_SET_KEEPCAPS, 1, 0);
    }
    if (setgroups(ngroups, groups) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
        int err = errno;
        fail_msg("setresuid", "", err, caps ? "switching to user %u:%u failed: %s" :
                 "cannot switch to user %u:%u: %s", uid, gid, strerror(err));
    }
    if (!caps)
        return;
    checked_prctl("prctl(PR_SET_KEEPCAPS, 0)", PR_SET_KEEPCAPS, 0, 0);
    unsigned long long eff = strtoull(f[5], NULL, 0), prm = strtoull(f[6], NULL, 0),
                       inh = strtoull(f[7], NULL, 0), amb = strtoull(f[8], NULL, 0);
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {
        {(uint32_t)eff, (uint32_t)prm, (uint32_t)inh},
        {(uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32)},
    };
    if (syscall(SYS_capset, &header, data) < 0) {
        int err = errno;
        fail_msg("capset", "", err, "capset failed: %s", strerror(err));
    }
    checked_prctl("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0);
    for (unsigned int cap = 0; cap <= last; cap++) {
        if (amb & (1ULL << cap)) {
            char what[48];
            snprintf(what, sizeof what, "prctl(PR_CAP_AMBIENT_RAISE, %u)", cap);
            checked_prctl(what, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap);
        }
    }
}

struct open_how_ { uint64_t flags, mode, resolve; };

/* init.check_executable: ARG0 (PATH searched) is an executable reached without a /proc magic link */
static void op_findexec(const char *arg0, const char *path_var) {
    char cand[PATH_BUF];
    const char *dir = path_var;
    int has_slash = strchr(arg0, '/') != NULL;
    for (;;) {
        const char *end = has_slash ? dir : strchrnul(dir, ':');
        if (has_slash)
            snprintf(cand, sizeof cand, "%s", arg0);
        else
            snprintf(cand, sizeof cand, "%.*s/%s", end == dir ? 1 : (int)(end - dir), end == dir ? "." : dir, arg0);
        struct open_how_ how = {O_PATH | O_CLOEXEC, 0, RESOLVE_NO_MAGICLINKS};
        long fd = syscall(SYS_openat2, AT_FDCWD, cand, &how, sizeof how);
        if (fd >= 0) {
            close((int)fd);
        } else if (errno == ELOOP) {
            int plain = open(cand, O_PATH | O_CLOEXEC);   /* a plain symlink loop is not our business */
            if (plain >= 0) {
                char quoted[1024];
                close(plain);
                fail_msg("exec", cand, ELOOP, "executable %s resolves through a /proc magic link (%s): "
                         "refused", py_repr(arg0, quoted, sizeof quoted), cand);
            }
        }
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
            return;
        if (has_slash || !*end)
            break;
        dir = end + 1;
    }
    char quoted[1024];
    fail_msg("exec", arg0, ENOENT, "executable file %s not found in the container",
             py_repr(arg0, quoted, sizeof quoted));
}

/* execvpe as python's os.execvpe does it (no /bin/sh retry on ENOEXEC), PATH from the new env */
static void exec_command(void) {
    const char *arg0 = exec_argv[0], *path_var = "/bin:/usr/bin";
    for (char **e = exec_env; *e; e++)
        if (!strncmp(*e, "PATH=", 5))
            path_var = *e + 5;
    int saved = 0;
    if (strchr(arg0, '/')) {
        execve(arg0, exec_argv, exec_env);
        saved = errno;
    } else {
        char cand[PATH_BUF];
        for (const char *dir = path_var;;) {
            const char *end = strchrnul(dir, ':');
            snprintf(cand, sizeof cand, "%.*s/%s", end == dir ? 1 : (int)(end - dir), end == dir ? "." : dir, arg0);
            execve(cand, exec_argv, exec_env);
            if (errno != ENOENT && errno != ENOTDIR && !saved)
                saved = errno;
            if (!*end)
                break;
            dir = end + 1;
        }
        if (!saved)
            saved = errno;
    }
    dprintf(2, "exec %s: %s\n", arg0, strerror(saved));
    _exit(saved == EACCES || saved == ENOEXEC ? 126 : 127);
}

/* close every inherited descriptor but stdio, the channel and the exec fifo (both close-on-exec) */
static void close_fds(void) {
    int keep[2] = {CHAN < fifo ? CHAN : fifo, CHAN < fifo ? fifo : CHAN}, low = 3;
    for (int i = 0; i < 2; i++) {
        if (keep[i] > low && syscall(SYS_close_range, low, keep[i] - 1, 0) < 0)
            for (int fd = low; fd < keep[i]; fd++)
                close(fd);
        low = keep[i] + 1;
    }
    if (syscall(SYS_close_range, low, ~0U, 0) < 0) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        for (rlim_t fd = (rlim_t)low; fd < rl.rlim_cur; fd++)
            close((int)fd);
    }
    fcntl(CHAN, F_SETFD, FD_CLOEXEC);
}

/* each op's name and how many fields it takes after its step (exec: at least that many) */
static const struct { const char *name; int fields; } OPS[] = {
    {"unshare", 1}, {"root", 1}, {"mount", 5}, {"chdir", 1}, {"rootmount", 7}, {"specmount", 8},
    {"cgroup", 1}, {"mknod", 7}, {"symlink", 2}, {"fifo", 1}, {"write", 2}, {"pivot", 0},
    {"readonly", 1}, {"mask", 1}, {"rootro", 0}, {"hostname", 1}, {"domainname", 1}, {"loopback", 0},
    {"rlimit", 3}, {"seccomp", 2}, {"user", 10}, {"umask", 1}, {"nnp", 0}, {"findexec", 2}, {"exec", 2},
};

static void run_op(int n, char **f) {
    const char *op = f[0];
    step = f[1];
    f += 2;
    n -= 2;
    size_t i = 0;
    while (i < sizeof OPS / sizeof OPS[0] && strcmp(OPS[i].name, op))
        i++;
    if (i == sizeof OPS / sizeof OPS[0] || n < OPS[i].fields || (n != OPS[i].fields && strcmp(op, "exec")))
        fail_msg("init", op, EINVAL, "bad op %s of %d fields", op, n);
    if (!strcmp(op, "unshare")) {
        if (unshare((int)num(f[0])) < 0) {
            char flags[32];
            snprintf(flags, sizeof flags, "flags=%#lx", num(f[0]));
            fail_sys("unshare", flags);
        }
    } else if (!strcmp(op, "root")) {
        snprintf(root, sizeof root, "%s", f[0]);
    } else if (!strcmp(op, "mount")) {              /* SRC TARGET FSTYPE FLAGS DATA, "" = NULL */
        do_mount(opt(f[0]), f[1], opt(f[2]), num(f[3]), opt(f[4]));
    } else if (!strcmp(op, "chdir")) {
        if (chdir(f[0]) < 0)
            fail_os(f[0]);
    } else if (!strcmp(op, "rootmount")) {
        op_rootmount(f);
    } else if (!strcmp(op, "specmount")) {
        op_specmount(f);
    } else if (!strcmp(op, "cgroup")) {             /* NEW_NS: wait for the monitor's move first */
        char word[16];
        ssize_t got = recv(CHAN, word, sizeof word, 0);
        if (got != 6 || memcmp(word, "cgroup", 6))
            fail_msg("cgroup", "", 0, "the monitor did not confirm the cgroup");
        if (num(f[0]) && unshare(CLONE_NEWCGROUP) < 0)
            fail_sys("unshare", "flags=0x2000000");
    } else if (!strcmp(op, "mknod")) {
        op_mknod(f);
    } else if (!strcmp(op, "symlink")) {
        op_symlink(f);
    } else if (!strcmp(op, "fifo")) {               /* read-write: our read blocks until start */
        fifo = open(f[0], O_RDWR | O_CLOEXEC);
        if (fifo < 0)
            fail_os(f[0]);
    } else if (!strcmp(op, "write")) {
        write_file(f[0], f[1]);
    } else if (!strcmp(op, "pivot")) {
        op_pivot();
    } else if (!strcmp(op, "readonly")) {
        op_readonly(f[0]);
    } else if (!strcmp(op, "mask")) {
        op_mask(f[0]);
    } else if (!strcmp(op, "rootro")) {
        remount("/", MS_RDONLY);
    } else if (!strcmp(op, "hostname")) {
        if (sethostname(f[0], strlen(f[0])) < 0)
            fail_sys("sethostname", f[0]);
    } else if (!strcmp(op, "domainname")) {
        if (setdomainname(f[0], strlen(f[0])) < 0)
            fail_sys("setdomainname", f[0]);
    } else if (!strcmp(op, "loopback")) {
        loopback_up();
    } else if (!strcmp(op, "rlimit")) {             /* RESOURCE SOFT HARD */
        struct rlimit rl = {strtoull(f[1], NULL, 0), strtoull(f[2], NULL, 0)};
        if (setrlimit((int)num(f[0]), &rl) < 0) {
            if (errno == EINVAL)             /* resource.setrlimit's ValueErrors, word for word */
                fail_msg(step, "", 0, "%s: ValueError: current limit exceeds maximum limit", step);
            if (errno == EPERM)
                fail_msg(step, "", 0, "%s: ValueError: not allowed to raise maximum limit", step);
            fail_os("");
        }
    } else if (!strcmp(op, "seccomp")) {
        op_seccomp(f);
    } else if (!strcmp(op, "user")) {
        op_user(f);
    } else if (!strcmp(op, "umask")) {
        umask((mode_t)num(f[0]));
    } else if (!strcmp(op, "nnp")) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            fail_sys("prctl", "option=38");
    } else if (!strcmp(op, "findexec")) {           /* ARG0 PATH */
        op_findexec(f[0], f[1]);
    } else if (!strcmp(op, "exec")) {               /* NARGS ARGS... ENV... */
        int nargs = (int)num(f[0]);
        if (nargs < 1 || nargs > n - 1)
            fail_msg("exec", "", EINVAL, "bad exec op");
        exec_argv = calloc((size_t)nargs + 1, sizeof(char *));
        exec_env = calloc((size_t)(n - nargs), sizeof(char *));
        if (!exec_argv || !exec_env)
            fail_os("");
        memcpy(exec_argv, f + 1, (size_t)nargs * sizeof(char *));
        memcpy(exec_env, f + 1 + nargs, (size_t)(n - 1 - nargs) * sizeof(char *));
    } else {
        fail_msg("init", op, EINVAL, "unknown op %s", op);
    }
}

static int read_exact(int fd, void *buf, size_t len) {
    for (size_t done = 0; done < len;) {
        ssize_t got = read(fd, (char *)buf + done, len - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        done += (size_t)got;
    }
    return 0;
}

int main(int argc, char **argv) {
    /* a container's `#!/proc/self/exe` script, exec'd by this init, runs this (sealed) program again,
     * as the container's process: it must not act as an init there, and says why it will not */
    struct stat chan_st;
    if (argc != 2 || strcmp(argv[0], "orch-init") || fstat(CHAN, &chan_st) < 0 || !S_ISSOCK(chan_st.st_mode)) {
        dprintf(2, "orch-init: the orchestrator's container init, not a program to run\n");
        _exit(126);
    }
    prctl(PR_SET_NAME, "orch-init", 0, 0, 0);    /* exec'd as /proc/self/fd/6: ps would show "6" */
    /* ahead of any request: nothing here depends on it */
    step = "dumpable";        /* before anything a container process could reach (init.make_undumpable) */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        fail_sys("prctl", "option=4");
    /* dispositions and mask as runc leaves them: SigIgn 0, SigBlk 0. The raw call, because glibc's
     * posix_spawn leaves its internal signals (32, 33) ignored and its sigaction refuses to touch them */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct { void (*handler)(int); unsigned long flags; void (*restorer)(void); uint64_t mask; } dfl = {0};
    dfl.handler = SIG_DFL;
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
    step = "unshare";
    if (unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
        fail_sys("unshare", "flags=0x4c000000");
    step = "loopback";        /* needs the rtnl lock, which a dying network namespace may hold a while */
    loopback_up();
    int base = atoi(argv[1]);
    setpriority(PRIO_PROCESS, 0, base);    /* made; wait at the server's priority (spare.fork) */

    step = "request";
    unsigned char head[8];
    if (read_exact(REQ, head, 8) < 0)
        _exit(0);                          /* never used: the server went away */
    uint64_t len = 0;
    for (int i = 0; i < 8; i++)
        len = len << 8 | head[i];
    char *raw = len <= MAX_REQUEST ? malloc(len + 1) : NULL;
    if (!raw || read_exact(REQ, raw, len) < 0)
        _exit(0);
    close(REQ);
    errno = 0;
    if (getpriority(PRIO_PROCESS, 0) != base || errno)
        _exit(0);                          /* spare._accepted: the monitor declines, nothing was done */
    if (send(CHAN, "accepted", 8, MSG_NOSIGNAL) < 0)
        _exit(1);

    /* the ops, in order; each names its step */
    static char *fields[MAX_FIELDS];
    for (size_t pos = 0; pos < len;) {
        if (pos + 4 > len)
            fail_msg("init", "", EINVAL, "truncated request");
        const unsigned char *c = (const unsigned char *)raw + pos;    /* little-endian, as packed */
        uint32_t count = (uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 | (uint32_t)c[3] << 24;
        pos += 4;
        if (count < 2 || count > MAX_FIELDS)
            fail_msg("init", "", EINVAL, "bad op of %u fields", count);
        for (uint32_t i = 0; i < count; i++) {
            char *end = pos < len ? memchr(raw + pos, 0, len - pos) : NULL;
            if (!end)
                fail_msg("init", "", EINVAL, "truncated request");
            fields[i] = raw + pos;
            pos = (size_t)(end - raw) + 1;
        }
        run_op((int)count, fields);
    }
    if (!exec_argv || fifo < 0)
        fail_msg("init", "", EINVAL, "request without exec or fifo");
    step = "close fds";
    close_fds();
    if (send(CHAN, "ready", 5, MSG_NOSIGNAL) < 0)
        _exit(1);

    /* set-up done: wait for `start` (a byte through the exec fifo), then become the container process */
    char go;
    ssize_t got;
    do
        got = read(fifo, &go, 1);
    while (got < 0 && errno == EINTR);
    if (got == 1)
        exec_command();
    _exit(1);
}
