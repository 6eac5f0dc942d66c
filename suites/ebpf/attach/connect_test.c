/* SPDX-License-Identifier: GPL-2.0 */
/* cgroup/connect4 and cgroup/connect6 (connect.bpf.c) attached to a cgroup and driven by real
 * TCP and UDP sockets on 127.0.0.1 and ::1: connects to the registration port put this netns's
 * cookie into km_manage, connects to the deregistration port take it out, and while the netns
 * is registered a connect to the "service" is rewritten to a local listener, which the
 * connection really reaches. Prints TAP 14. */
#include "attach_test.h"

#define REG_PORT 15929
#define DEREG_PORT 15930
#define SVC_IP4 0x7f640001 /* 127.100.0.1: loopback, where nothing listens */
#define SVC_PORT 18080

static int manage_fd, counters_fd;
static __u64 cookie;

/* km_manage's entry for our netns: 1 found, 0 absent. */
static int managed(struct km_entry *entry)
{
	return bpf_map_lookup_elem(manage_fd, &cookie, entry) == 0;
}

/* Connects a TYPE socket to loopback:PORT of FAMILY and closes it; errno or 0. */
static int touch(int family, int type, __u16 port)
{
	union at_addr to = at_addr(family, INADDR_LOOPBACK, port);
	int fd = at_connect(type, &to, AT_SOON_MS);

	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

static const char *fam(int family)
{
	return family == AF_INET6 ? "IPv6" : "IPv4";
}

static const char *kind(int type)
{
	return type == SOCK_STREAM ? "TCP" : "UDP";
}

/* Register with a TYPE socket of FAMILY and check the entry, then deregister. */
static void register_cycle(int family, int type)
{
	struct km_entry e = { 0 };
	int err, found;

	err = touch(family, type, REG_PORT);
	at_ok(err == 0, "%s %s connect to the registration port: %s", fam(family), kind(type),
	      at_errname(err));
	found = managed(&e);
	at_ok(found && e.family == (__u32)family && e.type == (__u32)type,
	      "km_manage holds our netns cookie, registered by %s %s (family %u type %u)",
	      fam(family), kind(type), e.family, e.type);
	err = touch(family, type, DEREG_PORT);
	at_ok(err == 0, "%s %s connect to the deregistration port: %s", fam(family), kind(type),
	      at_errname(err));
	at_ok(!managed(&e), "km_manage no longer holds our netns cookie");
}

/* Connects to the service over FAMILY; whether it reached LISTENER, which echoes a word. */
static int reach_service(int family, int listener, int *err)
{
	union at_addr svc = at_addr(family, SVC_IP4, SVC_PORT);
	int fd = at_connect(SOCK_STREAM, &svc, AT_SOON_MS);
	int peer, ok;
	char buf[16] = { 0 };

	*err = fd < 0 ? errno : 0;
	if (fd < 0)
		return 0;
	peer = at_accept(listener, AT_SOON_MS);
	ok = peer >= 0 && write(fd, "ping", 4) == 4 && at_wait(peer, POLLIN, AT_SOON_MS) &&
	     read(peer, buf, sizeof(buf) - 1) == 4 && strcmp(buf, "ping") == 0;
	if (peer >= 0)
		close(peer);
	close(fd);
	return ok;
}

int main(void)
{
	struct km_config cfg = {
		.reg_port = REG_PORT,
		.dereg_port = DEREG_PORT,
		.svc_port = SVC_PORT,
		.svc_ip4 = SVC_IP4,
	};
	struct km_entry e;
	__u32 zero = 0;
	int listeners[4], backend4, backend6, probe, err, reached;

	at_start("connect");
	at_open("connect");
	manage_fd = at_map("km_manage");
	counters_fd = at_map("km_counters");
	at_attach("km_connect4");
	at_attach("km_connect6");
	at_enter();

	/* Listeners for the control ports (so TCP connects complete) and the backends. */
	listeners[0] = at_server(AF_INET, SOCK_STREAM, REG_PORT);
	listeners[1] = at_server(AF_INET, SOCK_STREAM, DEREG_PORT);
	listeners[2] = at_server(AF_INET6, SOCK_STREAM, REG_PORT);
	listeners[3] = at_server(AF_INET6, SOCK_STREAM, DEREG_PORT);
	backend4 = at_server(AF_INET, SOCK_STREAM, 0);
	backend6 = at_server(AF_INET6, SOCK_STREAM, 0);
	cfg.backend_port = at_local_port(backend4);
	if (at_local_port(backend6) != cfg.backend_port) {
		close(backend6);
		backend6 = at_server(AF_INET6, SOCK_STREAM, cfg.backend_port);
	}
	if (bpf_map_update_elem(at_map("km_config"), &zero, &cfg, BPF_ANY) != 0)
		at_bail("cannot configure km_config: %s", strerror(errno));

	probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cookie = at_netns_cookie(probe);
	close(probe);
	if (!cookie)
		at_skip_all("the kernel has no SO_NETNS_COOKIE (Linux 5.14 and later)");
	at_diag("netns cookie %llu, backend port %u", (unsigned long long)cookie,
		cfg.backend_port);

	at_ok(!managed(&e), "km_manage starts without our netns");
	reached = reach_service(AF_INET, backend4, &err);
	at_ok(!reached && err == ECONNREFUSED,
	      "unregistered: the IPv4 service is not redirected (%s)", at_errname(err));

	register_cycle(AF_INET, SOCK_STREAM);
	register_cycle(AF_INET, SOCK_DGRAM);
	register_cycle(AF_INET6, SOCK_STREAM);
	register_cycle(AF_INET6, SOCK_DGRAM);

	/* Registered: the service is the backend. */
	err = touch(AF_INET, SOCK_STREAM, REG_PORT);
	at_ok(err == 0 && managed(&e), "registered again over IPv4 TCP");
	reached = reach_service(AF_INET, backend4, &err);
	at_ok(reached,
	      "registered: a connect to 127.100.0.1:%u reaches the listener on 127.0.0.1:%u (%s)",
	      SVC_PORT, cfg.backend_port, at_errname(err));
	reached = reach_service(AF_INET6, backend6, &err);
	at_ok(reached,
	      "registered: a connect to [::1]:%u reaches the listener on [::1]:%u (%s)",
	      SVC_PORT, cfg.backend_port, at_errname(err));
	at_ok(at_counter(counters_fd, KM_REDIRECTED4) == 1 &&
		      at_counter(counters_fd, KM_REDIRECTED6) == 1,
	      "one redirect counted per family (IPv4 %llu, IPv6 %llu)",
	      (unsigned long long)at_counter(counters_fd, KM_REDIRECTED4),
	      (unsigned long long)at_counter(counters_fd, KM_REDIRECTED6));
	at_ok(at_counter(counters_fd, KM_REGISTERED) == 5 &&
		      at_counter(counters_fd, KM_DEREGISTERED) == 4,
	      "5 registrations and 4 deregistrations counted (%llu, %llu)",
	      (unsigned long long)at_counter(counters_fd, KM_REGISTERED),
	      (unsigned long long)at_counter(counters_fd, KM_DEREGISTERED));

	/* Detached: connects are the kernel's own again. */
	at_detach();
	err = touch(AF_INET, SOCK_STREAM, DEREG_PORT);
	at_ok(err == 0 && managed(&e), "detached: deregistering does nothing");
	reached = reach_service(AF_INET, backend4, &err);
	at_ok(!reached && err == ECONNREFUSED,
	      "detached: the IPv4 service is not redirected (%s)", at_errname(err));

	for (int i = 0; i < 4; i++)
		close(listeners[i]);
	close(backend4);
	close(backend6);
	return at_finish();
}
