/* SPDX-License-Identifier: GPL-2.0 */
/* User-space helpers of the attach tests: TAP 14 output, a throwaway cgroup2 and network
 * namespace, the eBPF object beside the executable, and loopback sockets with timeouts.
 *
 * A test program calls at_start() (root, cgroup2, a fresh netns with lo up), at_open() its
 * object, attaches programs to at_cgroup_fd(), at_enter() the cgroup *before* creating the
 * sockets the programs should see (a socket belongs to its creator's cgroup), checks with
 * at_ok(), and ends with at_finish(), which detaches, leaves and removes the cgroup and
 * prints the plan. A setup failure is at_bail() ("Bail out!"), a missing facility
 * at_skip_all() ("1..0 # SKIP"). */
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "attach_maps.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define AT_CGROUP_ROOT "/sys/fs/cgroup"
/* How long a connect or receive that should not happen is waited for. */
#define AT_NEVER_MS 300
/* How long one that should happen may take. */
#define AT_SOON_MS 2000
#define AT_MAX_LINKS 8

struct at_state {
	const char *name;
	int tests, failed;
	char cgroup[PATH_MAX];   /* ours */
	char home[PATH_MAX];     /* where we were */
	int cgroup_fd;
	int entered;
	struct bpf_object *obj;
	struct bpf_link *links[AT_MAX_LINKS];
	int nlinks;
};

static struct at_state at;

static inline void at_vprint(const char *prefix, const char *fmt, va_list ap)
{
	fputs(prefix, stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
}

/* A diagnostic line: "# ...". */
static inline void at_diag(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	at_vprint("# ", fmt, ap);
	va_end(ap);
}

/* A test point; returns `ok`. */
static inline int at_ok(int ok, const char *fmt, ...)
{
	va_list ap;

	at.tests++;
	if (!ok)
		at.failed++;
	printf("%sok %d - ", ok ? "" : "not ", at.tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	return ok;
}

static inline void at_cleanup(void);

/* Stops the run: the setup failed. */
static inline void at_bail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	at_vprint("Bail out! ", fmt, ap);
	va_end(ap);
	at_cleanup();
	exit(1);
}

/* Skips everything: the machine cannot run this test. */
static inline void at_skip_all(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	at_vprint("1..0 # SKIP ", fmt, ap);
	va_end(ap);
	at_cleanup();
	exit(0);
}

static inline int at_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	fputs("libbpf: ", stderr);
	return vfprintf(stderr, fmt, ap);
}

/* Writes `text` to `path`; 0 or -errno. */
static inline int at_write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int err;

	if (fd < 0)
		return -errno;
	n = write(fd, text, strlen(text));
	err = n < 0 ? -errno : 0;
	close(fd);
	return err;
}

/* Brings `lo` up in the current network namespace. */
static inline int at_loopback_up(void)
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd < 0)
		return -errno;
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		err = -errno;
	} else if (!(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			err = -errno;
	}
	close(fd);
	return err;
}

/* This process's cgroup2 path ("/" for the root), from /proc/self/cgroup's "0::" line. */
static inline int at_own_cgroup(char *out, size_t size)
{
	char line[PATH_MAX];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int found = 0;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = 0;
			snprintf(out, size, "%.*s", (int)(size - 1), line + 3);
			found = 1;
			break;
		}
	}
	fclose(f);
	return found ? 0 : -ENOENT;
}

/* TAP header; checks root and cgroup2; moves into a network namespace of our own (so ports
 * are ours and the netns cookie is fresh) with lo up; creates our cgroup. */
static inline void at_start(const char *name)
{
	struct statfs fs;
	char own[PATH_MAX - 64];
	int err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	at.name = name;
	at.cgroup_fd = -1;
	printf("TAP version 14\n");
	libbpf_set_print(at_libbpf_print);
	if (geteuid() != 0)
		at_skip_all("needs root (required_user='root')");
	if (statfs(AT_CGROUP_ROOT, &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC)
		at_skip_all("no cgroup2 file system at " AT_CGROUP_ROOT);
	if (unshare(CLONE_NEWNET) != 0)
		at_diag("no network namespace of our own (%s); using the current one", strerror(errno));
	err = at_loopback_up();
	if (err)
		at_bail("cannot bring lo up: %s", strerror(-err));
	if (at_own_cgroup(own, sizeof(own)) != 0)
		snprintf(own, sizeof(own), "/");
	snprintf(at.home, sizeof(at.home), "%s%s", AT_CGROUP_ROOT, strcmp(own, "/") ? own : "");
	snprintf(at.cgroup, sizeof(at.cgroup), "%s/lab-%s-%d", AT_CGROUP_ROOT, name, (int)getpid());
	if (mkdir(at.cgroup, 0755) != 0)
		at_bail("cannot create cgroup %s: %s", at.cgroup, strerror(errno));
	at.cgroup_fd = open(at.cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (at.cgroup_fd < 0)
		at_bail("cannot open cgroup %s: %s", at.cgroup, strerror(errno));
	at_diag("cgroup %s", at.cgroup);
}

static inline int at_cgroup_fd(void)
{
	return at.cgroup_fd;
}

/* Moves this process into our cgroup: sockets created from now on belong to it. */
static inline void at_enter(void)
{
	char procs[PATH_MAX + 16];
	char pid[32];
	int err;

	snprintf(procs, sizeof(procs), "%s/cgroup.procs", at.cgroup);
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	err = at_write_file(procs, pid);
	if (err)
		at_bail("cannot move into %s: %s", at.cgroup, strerror(-err));
	at.entered = 1;
}

/* Opens and loads NAME.bpf.o from the executable's directory. */
static inline struct bpf_object *at_open(const char *name)
{
	char exe[PATH_MAX];
	char path[PATH_MAX + 64];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	struct bpf_object *obj;
	int err;

	if (n < 0)
		at_bail("cannot read /proc/self/exe: %s", strerror(errno));
	exe[n] = 0;
	snprintf(path, sizeof(path), "%s/%s.bpf.o", dirname(exe), name);
	obj = bpf_object__open_file(path, NULL);
	if (!obj)
		at_bail("cannot open %s: %s", path, strerror(errno));
	at.obj = obj;
	err = bpf_object__load(obj);
	if (err)
		at_bail("cannot load %s (the verifier's words are on stderr): %s", path,
			strerror(-err));
	return obj;
}

/* Attaches program PROG of our object to our cgroup (its section names the hook). */
static inline struct bpf_link *at_attach(const char *prog)
{
	struct bpf_program *p = bpf_object__find_program_by_name(at.obj, prog);
	struct bpf_link *link;

	if (!p)
		at_bail("no program %s in the object", prog);
	if (at.nlinks == AT_MAX_LINKS)
		at_bail("too many links");
	link = bpf_program__attach_cgroup(p, at.cgroup_fd);
	if (!link)
		at_bail("cannot attach %s (%s) to %s: %s", prog, bpf_program__section_name(p),
			at.cgroup, strerror(errno));
	at.links[at.nlinks++] = link;
	return link;
}

/* Detaches every program. */
static inline void at_detach(void)
{
	while (at.nlinks > 0)
		bpf_link__destroy(at.links[--at.nlinks]);
}

/* The fd of map NAME of our object. */
static inline int at_map(const char *name)
{
	struct bpf_map *m = bpf_object__find_map_by_name(at.obj, name);

	if (!m)
		at_bail("no map %s in the object", name);
	return bpf_map__fd(m);
}

/* Element INDEX of a __u64 array map (counters); ~0 when it cannot be read. */
static inline __u64 at_counter(int map_fd, __u32 index)
{
	__u64 value;

	if (bpf_map_lookup_elem(map_fd, &index, &value) != 0)
		return ~(__u64)0;
	return value;
}

static inline void at_cleanup(void)
{
	char procs[PATH_MAX + 16];
	char pid[32];

	at_detach();
	if (at.obj) {
		bpf_object__close(at.obj);
		at.obj = NULL;
	}
	if (at.entered) {
		snprintf(procs, sizeof(procs), "%s/cgroup.procs", at.home);
		snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
		if (at_write_file(procs, pid) == 0)
			at.entered = 0;
	}
	if (at.cgroup_fd >= 0) {
		close(at.cgroup_fd);
		at.cgroup_fd = -1;
		if (!at.entered && rmdir(at.cgroup) != 0)
			fprintf(stderr, "%s: cannot remove %s: %s\n", at.name, at.cgroup,
				strerror(errno));
	}
}

/* Cleans up, prints the plan; the exit status for main. */
static inline int at_finish(void)
{
	at_cleanup();
	printf("1..%d\n", at.tests);
	if (at.failed)
		at_diag("%d of %d failed", at.failed, at.tests);
	return at.failed ? 1 : 0;
}

/* ---- Sockets on loopback. ---- */

union at_addr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
	struct sockaddr_storage ss;
};

/* IPv4 ADDR (host order) or, for AF_INET6, ::1; PORT in host order. */
static inline union at_addr at_addr(int family, __u32 addr4, __u16 port)
{
	union at_addr a;

	memset(&a, 0, sizeof(a));
	if (family == AF_INET6) {
		a.in6.sin6_family = AF_INET6;
		a.in6.sin6_addr = in6addr_loopback;
		a.in6.sin6_port = htons(port);
	} else {
		a.in4.sin_family = AF_INET;
		a.in4.sin_addr.s_addr = htonl(addr4);
		a.in4.sin_port = htons(port);
	}
	return a;
}

static inline socklen_t at_len(const union at_addr *a)
{
	return a->sa.sa_family == AF_INET6 ? sizeof(a->in6) : sizeof(a->in4);
}

static inline __u16 at_port_of(const union at_addr *a)
{
	return ntohs(a->sa.sa_family == AF_INET6 ? a->in6.sin6_port : a->in4.sin_port);
}

/* The local port of socket FD, host order; 0 on error. */
static inline __u16 at_local_port(int fd)
{
	union at_addr a;
	socklen_t len = sizeof(a);

	if (getsockname(fd, &a.sa, &len) != 0)
		return 0;
	return at_port_of(&a);
}

/* A socket of TYPE bound to loopback:PORT (0: any), listening if TCP; bails on failure. */
static inline int at_server(int family, int type, __u16 port)
{
	union at_addr a = at_addr(family, INADDR_LOOPBACK, port);
	int one = 1;
	int fd = socket(family, type | SOCK_CLOEXEC, 0);

	if (fd < 0)
		at_bail("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, &a.sa, at_len(&a)) != 0)
		at_bail("bind to port %u: %s", port, strerror(errno));
	if (type == SOCK_STREAM && listen(fd, 16) != 0)
		at_bail("listen: %s", strerror(errno));
	return fd;
}

/* Waits up to MS for EVENTS on FD; whether they came. */
static inline int at_wait(int fd, short events, int ms)
{
	struct pollfd p = { .fd = fd, .events = events };

	return poll(&p, 1, ms) == 1 && (p.revents & events);
}

/* A socket of TYPE connected to TO within MS; -1 with errno set (ETIMEDOUT when the
 * connect neither completed nor failed in time). */
static inline int at_connect(int type, const union at_addr *to, int ms)
{
	int fd = socket(to->sa.sa_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int err = 0;
	socklen_t len = sizeof(err);

	if (fd < 0)
		return -1;
	if (connect(fd, &to->sa, at_len(to)) == 0)
		return fd;
	if (errno != EINPROGRESS)
		goto fail;
	if (!at_wait(fd, POLLOUT, ms)) {
		errno = ETIMEDOUT;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		goto fail;
	if (err) {
		errno = err;
		goto fail;
	}
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

/* Accepts one connection on listener FD within MS; -1 if none came. */
static inline int at_accept(int fd, int ms)
{
	if (!at_wait(fd, POLLIN, ms))
		return -1;
	return accept4(fd, NULL, NULL, SOCK_CLOEXEC);
}

/* Receives a datagram on FD within MS into BUF (NUL-terminated); its length or -1. */
static inline ssize_t at_recv(int fd, char *buf, size_t size, union at_addr *from, int ms)
{
	socklen_t len = sizeof(*from);
	ssize_t n;

	if (!at_wait(fd, POLLIN, ms))
		return -1;
	n = recvfrom(fd, buf, size - 1, MSG_DONTWAIT, &from->sa, &len);
	if (n >= 0)
		buf[n] = 0;
	return n;
}

/* The netns cookie of socket FD's namespace, or 0. */
static inline __u64 at_netns_cookie(int fd)
{
	__u64 cookie = 0;
	socklen_t len = sizeof(cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
		return 0;
	return cookie;
}

/* A string naming errno E, "connected" for 0. */
static inline const char *at_errname(int e)
{
	return e ? strerror(e) : "connected";
}
