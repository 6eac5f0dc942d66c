/* SPDX-License-Identifier: GPL-2.0 */
/* km_manage and the connect logic of src/cgroup_connect.c. cgroup/connect* programs cannot be
 * test-run on the lab's kernels, so tc checks call the connect handlers on a bpf_sock_addr of
 * their own, with bpf_get_netns_cookie mocked to return the netns the test chooses.
 * connect4_attached is a real cgroup/connect4 test: runners report it skipped where the kernel
 * cannot test-run cgroup_sock_addr programs. */
#include <lab/test.h>
#include <bpf/bpf_helpers.h>

/* The netns cookie bpf_get_netns_cookie returns (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} mock_netns SEC(".maps");

static __always_inline __u64 mock_bpf_get_netns_cookie(void *ctx)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&mock_netns, &zero);

	return c ? *c : 0;
}

static __always_inline void set_netns(__u64 cookie)
{
	__u32 zero = 0;

	bpf_map_update_elem(&mock_netns, &zero, &cookie, BPF_ANY);
}

#define bpf_get_netns_cookie mock_bpf_get_netns_cookie
#include "../src/cgroup_connect.c"

#define NETNS_A 0x1001
#define NETNS_B 0x2002

/* A connect(2) to ADDR:PORT (host order), as cgroup/connect4 would see it. */
static __always_inline void sa4(struct bpf_sock_addr *sa, __u32 addr, __u16 port)
{
	__builtin_memset(sa, 0, sizeof(*sa));
	sa->family = AF_INET;
	sa->type = 1; /* SOCK_STREAM */
	sa->user_ip4 = bpf_htonl(addr);
	sa->user_port = bpf_htons(port);
}

static __always_inline void sa6(struct bpf_sock_addr *sa, __u32 a0, __u32 a1, __u32 a2, __u32 a3,
				__u16 port)
{
	__builtin_memset(sa, 0, sizeof(*sa));
	sa->family = AF_INET6;
	sa->type = 1;
	sa->user_ip6[0] = bpf_htonl(a0);
	sa->user_ip6[1] = bpf_htonl(a1);
	sa->user_ip6[2] = bpf_htonl(a2);
	sa->user_ip6[3] = bpf_htonl(a3);
	sa->user_port = bpf_htons(port);
}

/* Registered netns connect through the control port; returns connect4's verdict. */
static __always_inline int km_register4(__u64 netns)
{
	struct bpf_sock_addr sa;

	set_netns(netns);
	sa4(&sa, 0, KM_CTL_ENABLE);
	return connect4_handle(&sa);
}

static __always_inline int km_deregister4(__u64 netns)
{
	struct bpf_sock_addr sa;

	set_netns(netns);
	sa4(&sa, 0, KM_CTL_DISABLE);
	return connect4_handle(&sa);
}

CHECK("tc", "km_register")
int km_register_check(struct __sk_buff *skb)
{
	int rc;

	test_init();

	TEST("unmanaged_at_start", {
		assert(!km_is_managed(NETNS_A));
		assert(!km_is_managed(NETNS_B));
	});
	TEST("control_connect_allowed", {
		rc = km_register4(NETNS_A);
		if (rc != SOCK_OK)
			test_fatal("connect4 to the control port returned %d, want %d", rc, SOCK_OK);
	});
	TEST("cookie_in_km_manage", {
		__u64 key = NETNS_A;
		__u32 *v = bpf_map_lookup_elem(&km_manage, &key);

		if (!v)
			test_fatal("netns %llx not in km_manage after registering", key);
		assert(*v == 1);
	});
	TEST("other_netns_untouched", {
		assert(!km_is_managed(NETNS_B));
	});
	TEST("register_twice", {
		km_register4(NETNS_A);
		assert(km_is_managed(NETNS_A));
	});

	test_finish();
}

CHECK("tc", "km_deregister")
int km_deregister_check(struct __sk_buff *skb)
{
	int rc;

	test_init();

	km_register4(NETNS_A);
	km_register4(NETNS_B);
	if (!km_is_managed(NETNS_A) || !km_is_managed(NETNS_B))
		test_fatal("registering netns %x and %x failed", NETNS_A, NETNS_B);

	TEST("deregister", {
		rc = km_deregister4(NETNS_A);
		assert(rc == SOCK_OK);
		if (km_is_managed(NETNS_A))
			test_fatal("netns %x still managed after deregistering", NETNS_A);
	});
	TEST("others_stay", {
		assert(km_is_managed(NETNS_B));
	});
	TEST("deregister_unknown", {
		rc = km_deregister4(0x3003);
		assert(rc == SOCK_OK);
		assert(km_is_managed(NETNS_B));
	});
	TEST("control_port_elsewhere_is_traffic", {
		struct bpf_sock_addr sa;

		/* port 9291 on a real address is an ordinary connect */
		set_netns(0x4004);
		sa4(&sa, 0x0a000001, KM_CTL_ENABLE);
		assert(connect4_handle(&sa) == SOCK_OK);
		assert(!km_is_managed(0x4004));
	});

	test_finish();
}

CHECK("tc", "km_redirect4")
int km_redirect4_check(struct __sk_buff *skb)
{
	struct bpf_sock_addr sa;

	test_init();

	km_register4(NETNS_A);

	TEST("managed_to_waypoint", {
		set_netns(NETNS_A);
		sa4(&sa, 0x08080808, 53);
		assert(connect4_handle(&sa) == SOCK_OK);
		if (sa.user_ip4 != bpf_htonl(KM_WAYPOINT4) ||
		    sa.user_port != bpf_htons(KM_WAYPOINT_PORT))
			test_fatal("rewritten to %x:%u, want the waypoint %x:%u",
				   bpf_ntohl(sa.user_ip4), bpf_ntohs(sa.user_port), KM_WAYPOINT4,
				   KM_WAYPOINT_PORT);
	});
	TEST("managed_loopback_untouched", {
		set_netns(NETNS_A);
		sa4(&sa, 0x7f000035, 53);
		connect4_handle(&sa);
		assert(sa.user_ip4 == bpf_htonl(0x7f000035));
		assert(sa.user_port == bpf_htons(53));
	});
	TEST("unmanaged_untouched", {
		set_netns(NETNS_B);
		sa4(&sa, 0x08080808, 53);
		assert(connect4_handle(&sa) == SOCK_OK);
		assert(sa.user_ip4 == bpf_htonl(0x08080808));
		assert(sa.user_port == bpf_htons(53));
	});
	TEST("after_deregister_untouched", {
		km_deregister4(NETNS_A);
		set_netns(NETNS_A);
		sa4(&sa, 0x08080808, 53);
		connect4_handle(&sa);
		assert(sa.user_ip4 == bpf_htonl(0x08080808));
	});

	test_finish();
}

CHECK("tc", "km_connect6")
int km_connect6_check(struct __sk_buff *skb)
{
	struct bpf_sock_addr sa;

	test_init();

	TEST("register_v6", {
		set_netns(NETNS_A);
		sa6(&sa, 0, 0, 0, 0, KM_CTL_ENABLE);
		assert(connect6_handle(&sa) == SOCK_OK);
		if (!km_is_managed(NETNS_A))
			test_fatal("netns %x not managed after connecting to [::]:%u", NETNS_A,
				   KM_CTL_ENABLE);
	});
	TEST("managed_to_waypoint", {
		set_netns(NETNS_A);
		/* fc00:dead:beef:1234::abcd port 53 */
		sa6(&sa, 0xfc00dead, 0xbeef1234, 0, 0xabcd, 53);
		connect6_handle(&sa);
		if (sa.user_ip6[0] || sa.user_ip6[1] || sa.user_ip6[2] ||
		    sa.user_ip6[3] != bpf_htonl(1))
			test_fatal("rewritten to %x:%x:%x:%x, want ::1", bpf_ntohl(sa.user_ip6[0]),
				   bpf_ntohl(sa.user_ip6[1]), bpf_ntohl(sa.user_ip6[2]),
				   bpf_ntohl(sa.user_ip6[3]));
		assert(sa.user_port == bpf_htons(KM_WAYPOINT_PORT));
	});
	TEST("unmanaged_untouched", {
		set_netns(NETNS_B);
		sa6(&sa, 0xfc00dead, 0xbeef1234, 0, 0xabcd, 53);
		connect6_handle(&sa);
		assert(sa.user_ip6[0] == bpf_htonl(0xfc00dead));
		assert(sa.user_ip6[3] == bpf_htonl(0xabcd));
		assert(sa.user_port == bpf_htons(53));
	});
	TEST("deregister_v6", {
		set_netns(NETNS_A);
		sa6(&sa, 0, 0, 0, 0, KM_CTL_DISABLE);
		connect6_handle(&sa);
		assert(!km_is_managed(NETNS_A));
	});

	test_finish();
}

/* A real cgroup/connect4 test: the same registration, from a connect4 program. Kernels that
 * cannot BPF_PROG_TEST_RUN cgroup_sock_addr programs make the runner skip it. */
CHECK("cgroup/connect4", "connect4_attached")
int connect4_attached_check(struct bpf_sock_addr *ctx)
{
	test_init();

	TEST("register", {
		km_register4(NETNS_A);
		assert(km_is_managed(NETNS_A));
	});

	test_finish();
}
