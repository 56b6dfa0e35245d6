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
 *
 * This file reads the request, runs the ops in order and owns the error reports; the ops on paths and
 * mounts are in init_fs.c, those on privileges and the exec in init_proc.c (shared names: init.h).
 */
#define _GNU_SOURCE
#include <errno.h>
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
#include <sys/syscall.h>
#include <unistd.h>

#include "init.h"
#include "orchc.h"

#define REQ 4
#define MAX_FIELDS 4096             /* per op: initplan.MAX_FIELDS */
#define MAX_REQUEST (64 << 20)

const char *step = "start";
char root[PATH_BUF];
static int fifo = -1;                /* the exec fifo: our read blocks until `start` writes */
static char **exec_argv, **exec_env; /* from op "exec", used once the fifo says go */

/* ---- error reports: "error", then message, op, path, errno and step, each NUL-terminated --------- */

void fail_msg(const char *op, const char *path, int err, const char *fmt, ...) {
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
void fail_sys(const char *op, const char *path) {
    int err = errno;
    fail_msg(op, path, err, "%s failed: %s", op, strerror(err));
}

/* an OSError in the Python init: "<step>: <strerror>", the op being the step */
void fail_os(const char *path) {
    int err = errno;
    fail_msg(step, path, err, "%s: %s", step, strerror(err));
}

void do_mount(const char *src, const char *target, const char *type, unsigned long flags, const char *data) {
    if (mount(src, target, type, flags, data) < 0)
        fail_sys("mount", target);
}

/* s as python's repr() quotes a str (orchc.h), so a message reads as the Python init's does */
const char *py_repr(const char *s, char *out, size_t cap) {
    repr_into(out, cap, s, strlen(s));
    return out;
}

/* snprintf into a PATH_BUF, refusing (never truncating) a path that does not fit */
void path_fmt(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_BUF, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_BUF)
        fail_msg("resolve", out, ENAMETOOLONG, "path too long");
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
    close_fds(fifo);
    if (send(CHAN, "ready", 5, MSG_NOSIGNAL) < 0)
        _exit(1);

    /* set-up done: wait for `start` (a byte through the exec fifo), then become the container process */
    char go;
    ssize_t got;
    do
        got = read(fifo, &go, 1);
    while (got < 0 && errno == EINTR);
    if (got == 1)
        exec_command(exec_argv, exec_env);
    _exit(1);
}
