/*
 * orchc.h: the few helpers the C programs share (orch-init's init*.c, orch-spare's sparemon.c).
 * Header-only and static inline: each program is built by cmonitor.build from its own sources, and
 * cmonitor hashes this file with them, so a change here rebuilds every program that includes it.
 */
#ifndef ORCHC_H
#define ORCHC_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* read exactly len bytes; -1 on an error or an end of file first */
static inline int read_exact(int fd, void *buf, size_t len) {
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

/* s (at most max_in bytes of it) quoted as python's repr() quotes a str: ASCII control characters
 * escaped, other bytes kept, so a message reads as the Python init's and monitor's do. Writes at most
 * cap bytes (cap >= 8) including a NUL, cutting the string short rather than overflowing; returns the
 * length written. */
static inline size_t repr_into(char *out, size_t cap, const char *s, size_t max_in) {
    char quote = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    size_t n = 0;
    out[n++] = quote;
    for (const char *end = s + strnlen(s, max_in); s < end && n + 6 < cap; s++) {
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
    return n;
}

#endif
