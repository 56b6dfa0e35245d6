/*
 * orch-spare: a warm spare's monitor, in C; with orch-init (init.c), the spare spare.py makes.
 *
 * The fork server posix_spawns this ahead of a create (no fork of a 20 MB interpreter, so no page
 * tables to copy and no copy-on-write faults in the server afterwards). It becomes a monitor (setsid,
 * SIGTERM blocked for good, child subreaper, named orch-monitor), unshares a pid namespace for its
 * children and spawns orch-init from its sealed copy: PID 1 there, which makes its network, IPC and
 * UTS namespaces and waits. Then, as monitor.serve does for the Python spare:
 *
 *   1. read the request the server compiled for us (cspare.monitor_request): 8-byte big-endian
 *      length, then NUL-terminated key/value pairs (state_dir, bundle, monitor_err, restart_path and
 *      restart_json, restartable, cgroup..., supervisor, arg...); an end of file first means the
 *      server went away: kill the init, exit;
 *   2. wait for the init's "accepted" (it has its own request); without it the spare declines
 *      ({"declined": true}) and the server takes the ordinary path, nothing having been done;
 *   3. stdout/stderr to STATE_DIR/monitor.err; restart.json written when there is a policy;
 *   4. wait for the API side's word on the "go" pipe that came with the request: "g" once it has
 *      made the cgroup (it does while the init works); anything else, or an end of file: give up;
 *   5. move the init into its cgroup (each dir's cgroup.procs) and tell it ("cgroup");
 *   6. wait for "ready", or an error report ("error" message op path errno step, NUL-separated),
 *      which becomes the create's error as monitor._setup words it; on any failure the init is killed;
 *   7. report {"ok": true, "pid", "start_time", "monitor_pid", "monitor_start_time"} and exec
 *      orch-supervise (same pid: the init's parent) with the container's stdout/stderr as fds 3 and 4.
 *
 * usage: orch-spare BASE_NICE NICE    (the server's priority, and how much lower to make the init at)
 * fds: 3 the request socket, 4 the report pipe, 5 the init's request pipe (handed to it as its fd 4),
 *      6 orch-init (sealed memfd), 7 the sealed interpreter (the restarter's, monitor.EXE_FD).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "orchc.h"

#define REQ 3
#define REPORT 4
#define INIT_REQ 5
#define INIT_EXE 6
#define PY_EXE 7
#define EXE_FD 6                   /* where orch-supervise's restarter expects the interpreter */
#define NETNS_FD 7                 /* monitor.NETNS_FD: the network namespace a restart rejoins */
#define SETUP_TIMEOUT_MS 60000     /* monitor.SETUP_TIMEOUT_S */
#define MAX_ARGS 64
#define MAX_DIRS 32
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

extern char **environ;
static pid_t init_pid = -1;
static int chan = -1;
static const char *bundle = "";

/* appends to a fixed buffer, never past it; the report's fields are capped (FIELD_MAX bytes each,
 * at most 6 bytes escaped), so a whole report always fits and stays valid JSON */
#define FIELD_MAX 4096
struct out { char buf[FIELD_MAX * 6 * 4 + 1024]; size_t n; };

static void put(struct out *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->n, sizeof o->buf - o->n, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->n += (size_t)n < sizeof o->buf - o->n ? (size_t)n : sizeof o->buf - o->n - 1;
}

/* a JSON string of at most FIELD_MAX bytes of s; bytes >= 0x80 pass through (the server decodes the
 * report with errors="replace", which also covers a character cut in half) */
static void put_str(struct out *o, const char *s) {
    put(o, "\"");
    for (const char *end = s + strnlen(s, FIELD_MAX); s < end && o->n + 8 < sizeof o->buf; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            put(o, "\\%c", c);
        else if (c < 0x20)
            put(o, "\\u%04x", c);
        else
            o->buf[o->n++] = (char)c;
    }
    put(o, "\"");
}

/* python's repr() of a str, as monitor._setup quotes the step */
static void put_repr(struct out *o, const char *s) {
    if (sizeof o->buf - o->n >= 8)
        o->n += repr_into(o->buf + o->n, sizeof o->buf - o->n, s, FIELD_MAX / 4);
}

static void kill_init(void) {
    if (init_pid > 0) {
        kill(init_pid, SIGKILL);
        while (waitpid(init_pid, NULL, 0) < 0 && errno == EINTR) {
        }
        init_pid = -1;
    }
}

/* the create's error, as monitor.report_failure words a RuntimeFailure (message already made in
 * ``message``); the init dies first */
static void __attribute__((noreturn)) report_error(const char *op, const char *path, int err,
                                                   const struct out *message) {
    static struct out o;
    kill_init();
    put(&o, "{\"ok\": false, \"error\": {\"message\": ");
    put_str(&o, message->buf);
    put(&o, ", \"op\": ");
    put_str(&o, op);
    put(&o, ", \"path\": ");
    put_str(&o, path);
    put(&o, ", \"errno\": %d, \"step\": \"monitor\"}}", err);
    if (write(REPORT, o.buf, o.n) < 0)
        dprintf(2, "%s\n", o.buf);
    _exit(1);
}

static void __attribute__((noreturn, format(printf, 4, 5))) fail(const char *op, const char *path, int err,
                                                                 const char *fmt, ...) {
    static struct out message;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message.buf, sizeof message.buf, fmt, ap);
    va_end(ap);
    report_error(op, path, err, &message);
}

/* one message from the init, waiting at most the set-up timeout; 0 when it closed its end */
static ssize_t recv_init(char *buf, size_t cap) {
    struct pollfd p = {.fd = chan, .events = POLLIN};
    for (;;) {
        int ready = poll(&p, 1, SETUP_TIMEOUT_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready == 0)
            fail("create", "", 0, "container init did not finish set-up in time");
        ssize_t got = recv(chan, buf, cap - 1, 0);
        if (got < 0 && (errno == EINTR || errno == ECONNRESET))
            continue;       /* a reset comes once, ahead of the report still queued (monitor._setup) */
        if (got < 0)
            fail("create", "", errno, "container init channel: %s", strerror(errno));
        buf[got] = 0;
        return got;
    }
}

static long long start_time(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');        /* comm may hold spaces and parentheses */
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    return p ? atoll(p + 1) : 0;
}

/* write-then-rename under a name of our own (fsutil.write_atomic), no fsync (statedir.write_json) */
static void write_atomic(const char *path, const char *data) {
    char tmp[4300];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(tmp, sizeof tmp, "%s.%d.%08lx.tmp", path, (int)getpid(), (unsigned long)ts.tv_nsec);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    size_t len = strlen(data), done = 0;
    while (fd >= 0 && done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    int err = fd < 0 ? errno : done < len ? (errno ? errno : EIO) : 0;
    if (fd >= 0 && close(fd) < 0 && !err)
        err = errno;
    if (!err && rename(tmp, path) < 0)
        err = errno;
    if (err) {
        unlink(tmp);
        fail("monitor", path, err, "monitor: %s", strerror(err));     /* statedir.write_json's OSError */
    }
}

static pid_t spawn_init(int base, int theirs, int out_w, int err_w) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none;
    char *argv[] = {"orch-init", NULL, NULL};
    char nice_arg[16], exe[32];
    pid_t pid;
    snprintf(nice_arg, sizeof nice_arg, "%d", base);
    argv[1] = nice_arg;
    snprintf(exe, sizeof exe, "/proc/self/fd/%d", INIT_EXE);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, theirs, 3);
    posix_spawn_file_actions_adddup2(&fa, INIT_REQ, 4);
    posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    posix_spawn_file_actions_adddup2(&fa, err_w, 2);
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);        /* ours blocks SIGTERM; the container's must not */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    char *env[] = {NULL};
    int err = posix_spawn(&pid, exe, &fa, &attr, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (err) {
        errno = err;
        return -1;
    }
    return pid;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    signal(SIGPIPE, SIG_IGN);          /* a server gone shows as EPIPE on the report, not a kill */
    if (syscall(SYS_close_range, 8, ~0U, 0) < 0)     /* nothing but ours (3-7) lives on in the supervisor */
        for (int fd = 8; fd < 1024; fd++)
            close(fd);
    int base = atoi(argv[1]), low = base + atoi(argv[2]);
    setpriority(PRIO_PROCESS, 0, low > 19 ? 19 : low);      /* spare.fork: made at a lower priority */
    for (int fd = REQ; fd <= PY_EXE; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);             /* none of ours may reach the init */
    setsid();                                       /* no terminal signals from the CLI */
    sigset_t mask;                                  /* monitor.become_monitor */
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    prctl(PR_SET_NAME, "orch-monitor", 0, 0, 0);

    /* the init, ahead of the request: PID 1 of our children's pid namespace */
    int pair[2], out[2], errp[2];
    if (unshare(CLONE_NEWPID) < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0 ||
        pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
        return 1;
    init_pid = spawn_init(base, pair[1], out[1], errp[1]);
    close(pair[1]);
    close(out[1]);
    close(errp[1]);
    close(INIT_REQ);         /* the init's alone: the server's write fails once the init is gone */
    close(INIT_EXE);
    chan = pair[0];
    if (init_pid < 0)
        return 1;
    setpriority(PRIO_PROCESS, 0, base);             /* made; wait at the server's priority */

    /* 1. the request, with the create's "go" pipe attached to its first byte (spare.hand_over) */
    unsigned char head[8];
    uint64_t len = 0;
    int go_fd = -1;
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct iovec iov = {head, sizeof head};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                        .msg_controllen = sizeof control.buf};
    ssize_t first;
    do
        first = recvmsg(REQ, &mh, MSG_CMSG_CLOEXEC);
    while (first < 0 && errno == EINTR);
    struct cmsghdr *cm = first > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
        memcpy(&go_fd, CMSG_DATA(cm), sizeof go_fd);
    if (first <= 0 || read_exact(REQ, head + first, sizeof head - (size_t)first) < 0) {
        kill_init();                                /* never used: the server went away */
        return 0;
    }
    for (int i = 0; i < 8; i++)
        len = len << 8 | head[i];
    char *raw = len <= (64 << 20) ? malloc(len + 1) : NULL;
    if (!raw || read_exact(REQ, raw, len) < 0) {
        kill_init();
        return 0;
    }
    raw[len] = 0;

    /* 2. the init's acceptance (spare._accepted): before it, nothing was done with the request */
    static char msg[65536];                         /* an init's report can name long paths */
    struct pollfd p = {.fd = chan, .events = POLLIN};
    ssize_t got = poll(&p, 1, SETUP_TIMEOUT_MS) == 1 ? recv(chan, msg, sizeof msg - 1, 0) : -1;
    if (got != 8 || memcmp(msg, "accepted", 8)) {
        kill_init();
        if (write(REPORT, "{\"declined\": true}", 18) < 0)
            return 1;
        return 0;
    }
    setpriority(PRIO_PROCESS, 0, base);

    const char *state_dir = "", *restart_json = "", *restart_path = "", *monitor_err = "", *supervisor = "",
               *dirs[MAX_DIRS];
    char *args[MAX_ARGS + 5];
    int ndirs = 0, nargs = 0, restartable = 0;
    for (char *k = raw; k < raw + len;) {
        char *v = k + strlen(k) + 1;
        if (v >= raw + len)
            break;
        if (!strcmp(k, "state_dir"))
            state_dir = v;
        else if (!strcmp(k, "bundle"))
            bundle = v;
        else if (!strcmp(k, "restart_json"))
            restart_json = v;
        else if (!strcmp(k, "restart_path"))
            restart_path = v;
        else if (!strcmp(k, "monitor_err"))
            monitor_err = v;
        else if (!strcmp(k, "restartable"))
            restartable = 1;
        else if (!strcmp(k, "supervisor"))
            supervisor = v;
        else if (!strcmp(k, "cgroup") && ndirs < MAX_DIRS)
            dirs[ndirs++] = v;
        else if (!strcmp(k, "arg") && nargs < MAX_ARGS)
            args[nargs++] = v;
        else if (!strcmp(k, "cgroup") || !strcmp(k, "arg"))
            fail("create", "", E2BIG, "orch-spare: too many %s entries", k);
        k = v + strlen(v) + 1;
    }

    /* 3. our output, the restart request */
    char path[4200];
    int errfd = open(monitor_err, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (errfd < 0) {                                /* monitor._redirect_stdio's OSError */
        int err = errno;
        fail("monitor", monitor_err, err, "monitor: %s", strerror(err));
    }
    dup2(errfd, 1);
    dup2(errfd, 2);
    close(errfd);
    if (*restart_path)
        write_atomic(restart_path, restart_json);

    /* 4. the API side's word (monitor.await_go): the cgroup is made; or give the create up */
    close(REQ);
    if (go_fd >= 0) {                        /* monitor.await_go: at most the set-up timeout */
        char word = 0;
        struct pollfd gp = {.fd = go_fd, .events = POLLIN};
        int waited;
        do
            waited = poll(&gp, 1, SETUP_TIMEOUT_MS);
        while (waited < 0 && errno == EINTR);
        if (waited == 0)
            fail("create", state_dir, 0, "the caller said nothing for %ds", SETUP_TIMEOUT_MS / 1000);
        if (waited < 0 || read_exact(go_fd, &word, 1) < 0 || word != 'g')
            fail("create", state_dir, 0, "the caller gave the create up");
        close(go_fd);
    }

    /* 5. the cgroup (monitor._join_cgroup) */
    char pid_text[24];
    int pid_len = snprintf(pid_text, sizeof pid_text, "%d", (int)init_pid);
    for (int i = 0; i < ndirs; i++) {
        snprintf(path, sizeof path, "%s/cgroup.procs", dirs[i]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, pid_text, (size_t)pid_len) != pid_len) {
            int err = errno;
            fail("write", path, err, "cannot move the init into its cgroup: %s", strerror(err));
        }
        close(fd);
    }
    send(chan, "cgroup", 6, MSG_NOSIGNAL);   /* a failed init's report is queued for us anyway */

    /* 6. ready, or the failed step */
    for (;;) {
        got = recv_init(msg, sizeof msg);
        if (got == 0)
            fail("create", bundle, 0, "container init exited during set-up");
        if (!strcmp(msg, "ready"))
            break;
        if (!strcmp(msg, "error")) {
            const char *f[5];                /* message op path errno step */
            char *q = msg + 6;
            for (int i = 0; i < 5; i++) {
                f[i] = q < msg + got ? q : "";
                q += strlen(f[i]) + 1;
            }
            static struct out message;       /* monitor._setup's wording */
            put(&message, "container init failed at step ");
            put_repr(&message, f[4]);
            put(&message, ": %s", f[0]);
            report_error(f[1], f[2], atoi(f[3]), &message);
        }
    }
    close(chan);

    /* 7. the report, then the supervisor. First the network namespace a restart rejoins
     * (monitor.held_netns), while the init still waits for start: its PID 1 cannot have left it yet */
    int ns = -1;
    if (restartable) {
        char ns_path[64];
        snprintf(ns_path, sizeof ns_path, "/proc/%d/ns/net", (int)init_pid);
        int held = open(ns_path, O_RDONLY | O_CLOEXEC);
        ns = held < 0 ? -1 : fcntl(held, F_DUPFD_CLOEXEC, 20);     /* clear of the fds below */
        if (ns < 0)
            dprintf(2, "monitor: cannot hold the network namespace of %d: %s\n", (int)init_pid, strerror(errno));
        if (held >= 0)
            close(held);
    }
    char report[256];
    int n = snprintf(report, sizeof report, "{\"ok\": true, \"pid\": %d, \"start_time\": %lld, \"monitor_pid\": "
                     "%d, \"monitor_start_time\": %lld}", (int)init_pid, start_time(init_pid), (int)getpid(),
                     start_time(getpid()));
    if (write(REPORT, report, (size_t)n) != n)
        fail("create", "", errno, "cannot report to the fork server");
    close(REPORT);
    char pid_arg[24], *sv_argv[MAX_ARGS + 5];
    snprintf(pid_arg, sizeof pid_arg, "%d", (int)init_pid);
    sv_argv[0] = (char *)supervisor;
    sv_argv[1] = pid_arg;
    sv_argv[2] = (char *)state_dir;
    for (int i = 0; i < nargs; i++)
        sv_argv[3 + i] = args[i];
    sv_argv[3 + nargs] = NULL;
    /* the container's stdout/stderr as 3 and 4, the interpreter for a restarter as EXE_FD and the
     * network namespace as NETNS_FD (a spare's init always has one of its own, and no user
     * namespace); copies above them first, so no dup2 closes another's source */
    int o = fcntl(out[0], F_DUPFD_CLOEXEC, 20), e = fcntl(errp[0], F_DUPFD_CLOEXEC, 20),
        x = fcntl(PY_EXE, F_DUPFD_CLOEXEC, 20);
    dup2(o, 3);
    dup2(e, 4);
    if (restartable)                             /* see monitor._exec_supervisor */
        dup2(x, EXE_FD);
    if (ns >= 0)
        dup2(ns, NETNS_FD);
    execv(supervisor, sv_argv);
    dprintf(2, "orch-spare: exec %s: %s\n", supervisor, strerror(errno));
    kill_init();             /* unsupervised, nobody would reap it or read its output */
    return 1;
}
