"""The native runtime: the only package that touches the kernel (namespaces, mounts, cgroups,
seccomp, capabilities, networking, the fork server, init and monitor)."""
