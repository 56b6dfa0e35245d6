/*
 * orch-supervise: the steady-state half of a container monitor (see monitor.py, which execs this).
 *
 * The Python monitor does the set-up (forks the container init, reports to `create`), then replaces
 * itself with this program so that each running container costs ~100 kB of unique memory instead of a
 * Python interpreter. Same pid, so it stays the init's parent. It copies the container's stdout (fd 3)
 * and stderr (fd 4) into <state_dir>/container.log as JSON lines {"t": time, "s": stream, "m": text}
 * (rotated once to container.log.1 past max_bytes), reaps the init, and records exit.json atomically.
 * The OOM verdict is left null here: the API side asks the cgroup (it exists until delete).
 *
 * With a restart policy (restart.py) it also gets the policy's decisions, precomputed in Python so the
 * policy is written once: four delays in ms (-1 = stay stopped) for {failed, exited 0} x {ran shorter
 * than RESET_MS, ran at least that long}, and the restarter's command line. After an exit that needs a
 * restart it records exit.json with "restart_pending": true, sleeps the delay (woken early by SIGTERM,
 * which `kill`/`delete` send after writing the user-stop marker), and, unless the user stopped the
 * container meanwhile, execs the restarter (monitor.py --restart): same pid, so still the subreaper and
 * parent of the next init, which execs this program again once the container runs.
 *
 * usage: orch-supervise INIT_PID STATE_DIR MAX_LOG_BYTES
 *                       [FAIL_MS OK_MS FAIL_RESET_MS OK_RESET_MS RESET_MS RESTARTER ARGS...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PARTIAL_MAX 16384          /* a longer line is logged in pieces (as pysupervise.LogWriter does) */
#define DRAIN_AFTER_EXIT_MS 1000   /* processes of a shared pid namespace may keep our pipes open */

static const char *stream_names[2] = {"stdout", "stderr"};
static char log_path[4096], log_old[4104];
static int log_fd = -1;
static long long log_size, log_max;
static char partial[2][PARTIAL_MAX];
static size_t partial_len[2];
static char line_buf[PARTIAL_MAX * 6 + 128];

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void open_log(void) {
    struct stat st;
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    log_size = (log_fd >= 0 && fstat(log_fd, &st) == 0) ? st.st_size : 0;
}

/* one JSON line; bytes >= 0x80 pass through (the reader decodes UTF-8 with replacement) */
static void emit(int stream, const char *data, size_t len) {
    struct timespec ts;
    size_t o;
    clock_gettime(CLOCK_REALTIME, &ts);
    o = (size_t)snprintf(line_buf, sizeof line_buf, "{\"t\": %lld.%06ld, \"s\": \"%s\", \"m\": \"",
                         (long long)ts.tv_sec, ts.tv_nsec / 1000, stream_names[stream]);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c == '"' || c == '\\') {
            line_buf[o++] = '\\';
            line_buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)sprintf(line_buf + o, "\\u%04x", c);
        } else {
            line_buf[o++] = (char)c;
        }
    }
    memcpy(line_buf + o, "\"}\n", 3);
    o += 3;
    if (log_size + (long long)o > log_max) {
        close(log_fd);
        rename(log_path, log_old);
        open_log();
    }
    write_all(log_fd, line_buf, o);
    log_size += (long long)o;
}

static void feed(int stream, const char *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            emit(stream, partial[stream], partial_len[stream]);
            partial_len[stream] = 0;
            continue;
        }
        if (partial_len[stream] == PARTIAL_MAX) {
            emit(stream, partial[stream], partial_len[stream]);
            partial_len[stream] = 0;
        }
        partial[stream][partial_len[stream]++] = data[i];
    }
}

/* restart_ms >= 0: a restart follows after that delay ("restart_pending"), else this exit is final */
static void record_exit(const char *dir, int status, long long restart_ms) {
    char path[4200], tmp[4260], body[320];
    struct timespec ts;
    int n, fd;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (WIFSIGNALED(status))
        n = snprintf(body, sizeof body, "{\"exit_code\": %d, \"exit_signal\": %d, ", 128 + WTERMSIG(status),
                     WTERMSIG(status));
    else
        n = snprintf(body, sizeof body, "{\"exit_code\": %d, \"exit_signal\": null, ", WEXITSTATUS(status));
    n += snprintf(body + n, sizeof body - (size_t)n, "\"finished_at\": %lld.%06ld, \"oom_killed\": null, "
                  "\"restart_pending\": %s, \"restart_delay_ms\": %lld}", (long long)ts.tv_sec,
                  ts.tv_nsec / 1000, restart_ms >= 0 ? "true" : "false", restart_ms >= 0 ? restart_ms : -1);
    snprintf(path, sizeof path, "%s/exit.json", dir);
    /* a temp name of our own (fsutil.write_atomic's pattern): the API side and the restarter write in
     * this dir too, and a shared "exit.json.tmp" would let one rename the other's half-written file */
    snprintf(tmp, sizeof tmp, "%s/.exit.json.%ld.%08lx.tmp", dir, (long)getpid(),
             (unsigned long)(ts.tv_nsec ^ (long)random()));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int bad = write_all(fd, body, (size_t)n) != 0;
    bad |= close(fd) != 0;
    if (bad || rename(tmp, path) != 0)
        unlink(tmp);                    /* never leave a temp file behind; exit.json stays as it was */
}

/* the user-stop marker (written by kill/delete before any signal), or the state dir gone (deleted):
 * neither state.json nor creating.json (the record until create has written state.json) is there */
static int user_stopped(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/user-stop", dir);
    if (access(path, F_OK) == 0)
        return 1;
    snprintf(path, sizeof path, "%s/state.json", dir);
    if (access(path, F_OK) == 0)
        return 0;
    snprintf(path, sizeof path, "%s/creating.json", dir);
    return access(path, F_OK) != 0;
}

/* ms the current run lasted: started.json is rewritten at each start (by `start` or the restarter) */
static long long uptime_ms(const char *dir) {
    char path[4200];
    struct stat st;
    struct timespec now;
    snprintf(path, sizeof path, "%s/started.json", dir);
    if (stat(path, &st) != 0)
        return 0;
    clock_gettime(CLOCK_REALTIME, &now);
    return ((long long)now.tv_sec - st.st_mtim.tv_sec) * 1000 + (now.tv_nsec - st.st_mtim.tv_nsec) / 1000000;
}

/* the policy's delay for this exit, -1 for none; argv[4..8] as in the usage above, or the same five
 * numbers from STATE_DIR/restart.args when the policy was changed while we run (runtime
 * update_restart; the restarter removes the file before it execs us again with fresh arguments) */
static long long restart_delay(char **argv, int status, const char *dir) {
    char path[4200];
    long long v[5];
    int failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    int changed = 0, stable;
    FILE *f;
    snprintf(path, sizeof path, "%s/restart.args", dir);
    if ((f = fopen(path, "re")) != NULL) {
        changed = fscanf(f, "%lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4]) == 5;
        fclose(f);
    }
    if (!changed)
        for (int i = 0; i < 5; i++)
            v[i] = atoll(argv[4 + i]);
    stable = uptime_ms(dir) >= v[4];
    return v[(failed ? 0 : 1) + (stable ? 2 : 0)];
}

/* sleep out the backoff; SIGTERM (through the signalfd) wakes us to look at the marker again */
static void backoff(int sfd, long long delay_ms, const char *dir) {
    long long end = now_ms() + delay_ms;
    struct pollfd p = {.fd = sfd, .events = POLLIN};
    for (;;) {
        long long left = end - now_ms();
        struct signalfd_siginfo info;
        if (left <= 0 || user_stopped(dir))
            return;
        poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        while (read(sfd, &info, sizeof info) > 0) {
        }
        while (waitpid(-1, NULL, WNOHANG) > 0) {   /* strays re-parented to us (subreaper) */
        }
    }
}

int main(int argc, char **argv) {
    sigset_t mask;
    struct pollfd fds[3];
    int open_streams = 2, exited = 0, status = 0;
    long long deadline = 0;
    pid_t init_pid;

    if (argc != 4 && argc < 10)
        return 2;
    init_pid = (pid_t)atoi(argv[1]);
    log_max = atoll(argv[3]);
    snprintf(log_path, sizeof log_path, "%s/container.log", argv[2]);
    snprintf(log_old, sizeof log_old, "%s.1", log_path);

    /* SIGCHLD through a signalfd; blocked first, and reaped once below, so no exit is missed. SIGTERM
     * only wakes a backoff; it stays blocked across the exec of the restarter (pending, harmless) */
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    fds[2].fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    fds[0].fd = 3;
    fds[1].fd = 4;
    for (int i = 0; i < 3; i++)
        fds[i].events = POLLIN;
    open_log();
    /* a user stop that raced with the restarter (marker written after its last look): the user
     * said stop */
    if (argc >= 10 && user_stopped(argv[2]))
        kill(init_pid, SIGKILL);

    for (;;) {
        int st, timeout = -1;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            if (pid == init_pid) {
                exited = 1;
                status = st;
                deadline = now_ms() + DRAIN_AFTER_EXIT_MS;
            }
        }
        if (exited) {
            long long left = deadline - now_ms();
            if (open_streams == 0 || left <= 0)
                break;
            timeout = (int)left;
        }
        if (poll(fds, 3, timeout) < 0 && errno != EINTR)
            break;
        if (fds[2].revents) {
            struct signalfd_siginfo info;
            while (read(fds[2].fd, &info, sizeof info) > 0) {
            }
        }
        for (int i = 0; i < 2; i++) {
            char buf[65536];
            ssize_t n;
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            n = read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                feed(i, buf, (size_t)n);
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                close(fds[i].fd);
                fds[i].fd = -1;  /* poll ignores negative descriptors */
                open_streams--;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (partial_len[i])
            emit(i, partial[i], partial_len[i]);
    if (!exited)
        return 0;
    if (argc >= 10) {
        long long delay = user_stopped(argv[2]) ? -1 : restart_delay(argv, status, argv[2]);
        if (delay >= 0) {
            record_exit(argv[2], status, delay);
            backoff(fds[2].fd, delay, argv[2]);
            if (!user_stopped(argv[2])) {
                for (int i = 0; i < 2; i++)
                    if (fds[i].fd >= 0)
                        close(fds[i].fd);
                execv(argv[9], argv + 10);   /* argv[9]: the sealed interpreter, argv[10]: its argv[0] */
                perror("orch-supervise: exec restarter");
            }
        }
    }
    record_exit(argv[2], status, -1);
    return 0;
}
