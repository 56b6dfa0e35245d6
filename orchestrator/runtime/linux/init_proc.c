/*
 * orch-init's privilege and exec ops (see init.h, init.c): the seccomp filter the API side compiled,
 * user, groups and capability sets in capabilities.apply's order, the executable check of
 * init.check_executable, the exec itself, and closing every descriptor the container must not get.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "init.h"

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

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* seccomp FLAGS HEX: the filter compiled by the API side (seccomp.compile_oci) */
void op_seccomp(char **f) {
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
void op_user(char **f) {
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
void op_findexec(const char *arg0, const char *path_var) {
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
void exec_command(char **exec_argv, char **exec_env) {
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
void close_fds(int fifo) {
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

