/*
 * init.h: what the parts of orch-init share. init.c reads the request and runs its ops in order, and
 * owns the error reports; init_fs.c has the paths inside the root and the mount ops; init_proc.c the
 * process's privileges (seccomp, user and capabilities) and the exec. cmonitor.build compiles the
 * three into one program (INIT_SOURCES).
 */
#ifndef ORCH_INIT_H
#define ORCH_INIT_H

#include <stddef.h>
#include <stdlib.h>

#define CHAN 3                      /* the SOCK_SEQPACKET channel to the monitor */
#define PATH_BUF 8192

extern const char *step;            /* the step running, named in an error report */
extern char root[PATH_BUF];         /* the container's root dir (op "root") */

/* init.c: an error report on the channel, then _exit(1) (see its header for the fields) */
void __attribute__((noreturn, format(printf, 4, 5))) fail_msg(const char *op, const char *path, int err,
                                                              const char *fmt, ...);
void __attribute__((noreturn)) fail_sys(const char *op, const char *path);
void __attribute__((noreturn)) fail_os(const char *path);
void do_mount(const char *src, const char *target, const char *type, unsigned long flags, const char *data);
const char *py_repr(const char *s, char *out, size_t cap);
void __attribute__((format(printf, 2, 3))) path_fmt(char *out, const char *fmt, ...);

/* an op's fields: "" is NULL, numbers are C literals (decimal, 0x...) */
static inline const char *opt(const char *s) { return *s ? s : NULL; }
static inline unsigned long num(const char *s) { return strtoul(s, NULL, 0); }

/* init_fs.c */
void remount(const char *target, unsigned long flags);
void op_rootmount(char **f);
void op_specmount(char **f);
void op_mknod(char **f);
void op_symlink(char **f);
void write_file(const char *path, const char *value);
void op_pivot(void);
void op_readonly(const char *path);
void op_mask(const char *path);

/* init_proc.c */
void op_seccomp(char **f);
void op_user(char **f);
void op_findexec(const char *arg0, const char *path_var);
void __attribute__((noreturn)) exec_command(char **argv, char **env);
void close_fds(int fifo);

#endif
