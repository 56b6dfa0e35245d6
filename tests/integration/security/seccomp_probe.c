/* Seccomp probe for tests/integration/security: calls each syscall through syscall(2) (no libc wrapper
 * that could pick another syscall) and prints "name errno" per line, 0 meaning success. Arguments are
 * chosen to be harmless even with no filter at all (missing paths, bad fds, no-op flags), so a broken
 * filter shows up as a different errno, never as a change to the host. Built with gcc -static so it
 * runs in an empty rootfs. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PROBE(label, ...) do { errno = 0; long r = syscall(__VA_ARGS__); \
    printf("%s %d\n", label, r < 0 ? errno : 0); } while (0)

int main(int argc, char **argv) {
    (void)argc; (void)argv;
    PROBE("mount", SYS_mount, "none", "/nonexistent-probe", "tmpfs", 0L, NULL);
    PROBE("umount2", SYS_umount2, "/nonexistent-probe", 2L);
    PROBE("unshare", SYS_unshare, 0L);                           /* no-op flags */
    PROBE("setns", SYS_setns, -1L, 0x40000000L);                  /* CLONE_NEWNET */
    PROBE("keyctl", SYS_keyctl, 0L, -3L, 0L);                    /* GET_KEYRING_ID session */
    PROBE("add_key", SYS_add_key, "probe-no-such-type", "probe", "x", 1L, -3L);
    PROBE("ptrace", SYS_ptrace, 0L, 0L, 0L, 0L);                 /* PTRACE_TRACEME */
    PROBE("open_by_handle_at", SYS_open_by_handle_at, -100L, NULL, 0L);
    PROBE("bpf", SYS_bpf, 0L, NULL, 0L);
    PROBE("clone3", SYS_clone3, NULL, 0L);
    PROBE("personality_query", SYS_personality, 0xffffffffL);
    PROBE("personality_norandom", SYS_personality, 0x0040000L);
    PROBE("socket_vsock", SYS_socket, 40L, 1L, 0L);
    PROBE("reboot", SYS_reboot, 1L, 2L, 0L, NULL);
    PROBE("init_module", SYS_init_module, NULL, 0L, "");
    PROBE("chroot", SYS_chroot, "/nonexistent");
    PROBE("userfaultfd", SYS_userfaultfd, 0L);
    PROBE("io_uring_setup", SYS_io_uring_setup, 1L, NULL);
    PROBE("getpid", SYS_getpid);
    PROBE("nr452", 452L, -100L, "/", 0L, 0L);                    /* fchmodat2, newer than the profile */
    PROBE("nr999", 999L);
    fflush(stdout);
    return 0;
}
