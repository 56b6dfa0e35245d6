/* Escape probe for tests/integration/escape: one static binary, one subcommand per escape attempt.
 * Every line it prints is "key value"; errno values are numbers (0 = the call succeeded). Arguments are
 * chosen so that a broken confinement shows up as a different answer, never as a change to the host:
 * /proc/sys files are only opened for writing (nothing is written), device nodes are only opened
 * read-only, every path it creates is inside the container. Built with gcc -static at test time. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void out(const char *key, long r) { printf("%s %d\n", key, r < 0 ? errno : 0); }
#define TRY(key, call) do { errno = 0; long r_ = (long)(call); out(key, r_); } while (0)

/* The escape syscalls, with the arguments an attacker would use (targets inside the container). */
static int syscalls(void) {
    mkdir("/tmp/m", 0755);
    TRY("mount", syscall(SYS_mount, "none", "/tmp/m", "tmpfs", 0L, NULL));
    TRY("mount_cgroup_v1", syscall(SYS_mount, "cgroup", "/tmp/m", "cgroup", 0L, "memory"));
    TRY("mount_remount_proc_sys", syscall(SYS_mount, NULL, "/proc/sys", NULL,
                                          (long)(MS_REMOUNT | MS_BIND), NULL));
    TRY("umount2", syscall(SYS_umount2, "/proc/sys", (long)MNT_DETACH));
    TRY("unshare_user", syscall(SYS_unshare, (long)CLONE_NEWUSER));
    TRY("unshare_mount", syscall(SYS_unshare, (long)CLONE_NEWNS));
    int nsfd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    TRY("setns", syscall(SYS_setns, (long)nsfd, (long)CLONE_NEWNS));
    if (nsfd >= 0) close(nsfd);
    TRY("keyctl", syscall(SYS_keyctl, (long)KEYCTL_GET_KEYRING_ID, (long)KEY_SPEC_SESSION_KEYRING, 0L));
    TRY("add_key", syscall(SYS_add_key, "user", "escape-probe", "x", 1L, (long)KEY_SPEC_PROCESS_KEYRING));
    pid_t child = fork();
    if (child == 0) { pause(); _exit(0); }
    TRY("ptrace_attach", syscall(SYS_ptrace, (long)PTRACE_ATTACH, (long)child, 0L, 0L));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* "shocker": a guessed handle (inode 2, generation 0) of the filesystem under "/" */
    struct { unsigned int bytes; int type; unsigned char f[8]; } h = {8, 1, {2, 0, 0, 0, 0, 0, 0, 0}};
    int rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    TRY("open_by_handle_at", syscall(SYS_open_by_handle_at, (long)rootfd, &h, (long)O_RDONLY));
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY; attr.key_size = 4; attr.value_size = 4; attr.max_entries = 1;
    TRY("bpf", syscall(SYS_bpf, (long)BPF_MAP_CREATE, &attr, (long)sizeof attr));
    TRY("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
    TRY("syslog", syscall(SYS_syslog, 10L, NULL, 0L));                /* SIZE_BUFFER: read-only */
    TRY("init_module", syscall(SYS_init_module, NULL, 0L, ""));
    TRY("reboot", syscall(SYS_reboot, 1L, 2L, 0L, NULL));             /* bad magic: EINVAL if let through */
    TRY("swapon", syscall(SYS_swapon, "/nonexistent", 0L));
    TRY("perf_event_open", syscall(SYS_perf_event_open, NULL, 0L, -1L, -1L, 0L));
    TRY("userfaultfd", syscall(SYS_userfaultfd, 0L));
    TRY("getpid", syscall(SYS_getpid));
    fflush(stdout);
    return 0;
}

/* /proc knobs: only opened for writing (nothing is written); masked paths: bytes / entries readable. */
static int procfs(int argc, char **argv) {
    const char *wr[] = {"/proc/sys/vm/swappiness", "/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger",
                        "/proc/sys/kernel/modprobe", "/proc/irq/default_smp_affinity",
                        "/sys/kernel/uevent_helper", "/sys/power/state",
                        "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/fs/cgroup/cgroup.procs", NULL};
    for (int i = 0; wr[i]; i++) {
        errno = 0;
        int fd = open(wr[i], O_WRONLY | O_CLOEXEC);
        printf("write %s %d\n", wr[i], fd < 0 ? errno : 0);
        if (fd >= 0) close(fd);
    }
    for (int i = 2; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) { printf("masked %s missing\n", argv[i]); continue; }
        long n = 0;
        if (S_ISDIR(st.st_mode)) {
            DIR *d = opendir(argv[i]);
            struct dirent *e;
            while (d && (e = readdir(d)))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
            if (d) closedir(d);
        } else {
            int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
            char buf[4096];
            ssize_t r;
            if (fd < 0) { printf("masked %s open-errno-%d\n", argv[i], errno); continue; }
            while ((r = read(fd, buf, sizeof buf)) > 0 && n < (1 << 20)) n += r;
            close(fd);
        }
        printf("masked %s %ld\n", argv[i], n);
    }
    fflush(stdout);
    return 0;
}

/* The classic double chroot: argv[2] is a host-only marker path that must stay unreachable. */
static int chroot_escape(char **argv) {
    struct stat st;
    mkdir("/tmp/jail", 0755);
    int dirfd = open("/", O_RDONLY | O_DIRECTORY);          /* kept open across the first chroot */
    TRY("chroot_jail", chroot("/tmp/jail"));
    TRY("fchdir_out", fchdir(dirfd));
    for (int i = 0; i < 64; i++) chdir("..");
    TRY("chroot_dot", chroot("."));
    TRY("stat_host_marker", stat(argv[2], &st));
    TRY("stat_own_probe", stat("/probe/escape_probe", &st));
    /* the shell-level variant: mkdir x; chroot x; cd ../../..; chroot . */
    mkdir("x", 0755);
    TRY("chroot_x", chroot("x"));
    for (int i = 0; i < 64; i++) chdir("..");
    TRY("chroot_dot2", chroot("."));
    TRY("stat_host_marker2", stat(argv[2], &st));
    TRY("stat_own_probe2", stat("/probe/escape_probe", &st));
    fflush(stdout);
    return 0;
}

/* Every descriptor we hold: its target, and for directories whether walking up from it reaches the
 * host marker argv[2] (what a leaked host directory fd would allow). */
static int fds(char **argv) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) { printf("error opendir %d\n", errno); return 1; }
    int self = dirfd(d);
    struct dirent *e;
    char rel[4096];
    size_t off = 0;
    for (int i = 0; i < 64; i++) off += (size_t)snprintf(rel + off, sizeof rel - off, "../");
    snprintf(rel + off, sizeof rel - off, "%s", argv[2] + 1);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd == self) continue;
        char link[64], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        struct stat st;
        int isdir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
        int reach = isdir && fstatat(fd, rel, &st, 0) == 0;
        printf("fd %d %s dir=%d reach=%d\n", fd, target, isdir, reach);
    }
    closedir(d);
    fflush(stdout);
    return 0;
}

/* Where the process was started: getcwd, /proc/self/cwd, and whether walking up reaches argv[2]. */
static int cwd(char **argv) {
    char buf[4096], rel[4096];
    errno = 0;
    char *c = getcwd(buf, sizeof buf);
    printf("getcwd %s %d\n", c ? c : "-", c ? 0 : errno);
    ssize_t n = readlink("/proc/self/cwd", buf, sizeof buf - 1);
    buf[n < 0 ? 0 : n] = 0;
    printf("proc_cwd %s\n", buf);
    size_t off = 0;
    for (int i = 0; i < 64; i++) off += (size_t)snprintf(rel + off, sizeof rel - off, "../");
    snprintf(rel + off, sizeof rel - off, "%s", argv[2] + 1);
    struct stat st;
    TRY("stat_host_marker_relative", stat(rel, &st));
    fflush(stdout);
    return 0;
}

/* mknod as Docker allows it (CAP_MKNOD), then open the nodes: the devices cgroup must refuse. argv[2],
 * argv[3]: major and minor of a host block device. */
static int mknod_open(char **argv) {
    TRY("mknod_char_mem", mknod("/tmp/mem", S_IFCHR | 0600, makedev(1, 1)));
    errno = 0;
    int fd = open("/tmp/mem", O_RDONLY | O_CLOEXEC);
    out("open_char_mem", fd);
    if (fd >= 0) close(fd);
    TRY("mknod_block_host", mknod("/tmp/disk", S_IFBLK | 0600, makedev(atoi(argv[2]), atoi(argv[3]))));
    errno = 0;
    fd = open("/tmp/disk", O_RDONLY | O_CLOEXEC);
    out("open_block_host", fd);
    if (fd >= 0) close(fd);
    errno = 0;
    fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    out("open_dev_null", fd);
    if (fd >= 0) close(fd);
    fflush(stdout);
    return 0;
}

/* Host processes: argv[2..] are host pids; signal 0 only checks whether they can be reached. */
static int pids(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        errno = 0;
        long r = kill(atoi(argv[i]), 0);
        printf("kill %s %d\n", argv[i], r < 0 ? errno : 0);
    }
    fflush(stdout);
    return 0;
}

/* Writes to the root filesystem (read-only rootfs) and an attempt to remount it read-write. */
static int rofs(void) {
    errno = 0;
    int fd = open("/escape-newfile", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    out("create_file", fd);
    if (fd >= 0) close(fd);
    TRY("mkdir", mkdir("/escape-newdir", 0755));
    TRY("unlink", unlink("/probe/escape_probe_suid"));
    TRY("remount_rw", syscall(SYS_mount, NULL, "/", NULL, (long)(MS_REMOUNT | MS_BIND), NULL));
    fflush(stdout);
    return 0;
}

/* Identity after execve (run as the setuid-root copy): real/effective/saved uid and the cap sets. */
static int ident(void) {
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    printf("uids %u %u %u\n", r, e, s);
    FILE *f = fopen("/proc/self/status", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Seccomp:", 8))
            fputs(line, stdout);
    if (f) fclose(f);
    fflush(stdout);
    return 0;
}

/* Watch for other processes joining the container (exec) for argv[2] seconds: report any whose
 * /proc/PID/exe opens to a file on another filesystem than our root (a host binary: the runtime's own
 * set-up code, caught before its execve), with the targets of the descriptors it holds at that moment. */
static int watch(char **argv) {
    struct stat root, st;
    stat("/", &root);
    int self = getpid(), caught = 0;
    time_t end = time(NULL) + atol(argv[2]);
    while (time(NULL) < end && !caught) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self) continue;
            char path[64], target[512];
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            if (fstat(fd, &st) == 0 && st.st_dev != root.st_dev) {
                ssize_t n = readlink(path, target, sizeof target - 1);
                target[n < 0 ? 0 : n] = 0;
                printf("caught %d exe %s dev=%u:%u\n", pid, target, major(st.st_dev), minor(st.st_dev));
                caught++;
                char fdd[64];
                snprintf(fdd, sizeof fdd, "/proc/%d/fd", pid);
                DIR *f = opendir(fdd);
                struct dirent *g;
                while (f && (g = readdir(f))) {
                    if (g->d_name[0] == '.') continue;
                    char l[384];
                    snprintf(l, sizeof l, "%s/%s", fdd, g->d_name);
                    n = readlink(l, target, sizeof target - 1);
                    target[n < 0 ? 0 : n] = 0;
                    printf("caught %d fd %s %s\n", pid, g->d_name, target);
                }
                if (f) closedir(f);
                /* opened only, never written: O_RDWR on mem needs ptrace-attach rights over it */
                snprintf(path, sizeof path, "/proc/%d/mem", pid);
                int mem = open(path, O_RDWR | O_CLOEXEC);
                printf("caught %d mem_rdwr %d\n", pid, mem < 0 ? errno : 0);
                if (mem >= 0) close(mem);
                fflush(stdout);
            }
            close(fd);
        }
        if (d) closedir(d);
    }
    printf("watch done %d\n", caught);
    fflush(stdout);
    return 0;
}

/* The host's loopback TCP port argv[2] and abstract unix socket argv[3] (both per network namespace). */
static int connect_host(char **argv) {
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = htons((unsigned short)atoi(argv[2]));
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    TRY("connect_tcp_loopback", connect(s, (struct sockaddr *)&in, sizeof in));
    close(s);
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    size_t n = strlen(argv[3]);
    memcpy(un.sun_path + 1, argv[3], n);                 /* leading NUL: the abstract namespace */
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    TRY("connect_abstract_unix", connect(s, (struct sockaddr *)&un,
                                         (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)));
    close(s);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "syscalls")) return syscalls();
    if (!strcmp(cmd, "procfs")) return procfs(argc, argv);
    if (!strcmp(cmd, "chroot") && argc > 2) return chroot_escape(argv);
    if (!strcmp(cmd, "fds") && argc > 2) return fds(argv);
    if (!strcmp(cmd, "cwd") && argc > 2) return cwd(argv);
    if (!strcmp(cmd, "mknod") && argc > 3) return mknod_open(argv);
    if (!strcmp(cmd, "pids")) return pids(argc, argv);
    if (!strcmp(cmd, "rofs")) return rofs();
    if (!strcmp(cmd, "ident")) return ident();
    if (!strcmp(cmd, "watch") && argc > 2) return watch(argv);
    if (!strcmp(cmd, "connect") && argc > 3) return connect_host(argv);
    return 2;
}
