/* SPDX-License-Identifier: GPL-2.0 */
/* Verdicts of the egress port policy of src/cgroup_skb_policy.c, run as a cgroup_skb program
 * on real packets. cgroup_skb programs cannot write packets, so each test's pktgen is a tc
 * program (the runner groups a test's stages by name); setup and check are cgroup_skb. */
#include <lab/test.h>
#include <bpf/bpf_helpers.h>

#include "../src/cgroup_skb_policy.c"

#include "pkt.h"

#define DST_IP 0x0a000202 /* 10.0.2.2 */

/* The check's verdict on the policy's return code: want ALLOW or DENY. */
#define check_verdict(skb, want)                                                           \
	do {                                                                               \
		__u32 __rc = 0xffffffff;                                                   \
		if (pkt_cgskb_retval((skb), &__rc))                                        \
			test_fatal("cannot read the setup's return code");                 \
		if (__rc != (want))                                                        \
			test_fatal("policy returned %u, want %u (1 allow, 0 deny)", __rc, \
				   (want));                                                \
	} while (0)

/* ---- UDP to 53 is allowed. ---- */

PKTGEN("tc", "allow_dns")
int allow_dns_pktgen(struct __sk_buff *skb)
{
	struct pkt_udp4 p;

	pkt_udp4_init(&p, DST_IP, 53);
	return pkt_skb_write(skb, &p) ? TC_ACT_SHOT : TC_ACT_OK;
}

SETUP("cgroup_skb/egress", "allow_dns")
int allow_dns_setup(struct __sk_buff *skb)
{
	return cgskb_policy(skb);
}

CHECK("cgroup_skb/egress", "allow_dns")
int allow_dns_check(struct __sk_buff *skb)
{
	test_init();
	check_verdict(skb, POLICY_ALLOW);
	test_finish();
}

/* ---- TCP to 23 is always denied. ---- */

PKTGEN("tc", "deny_telnet")
int deny_telnet_pktgen(struct __sk_buff *skb)
{
	struct pkt_tcp4 p;

	pkt_tcp4_init(&p, DST_IP, TELNET_PORT);
	return pkt_skb_write(skb, &p) ? TC_ACT_SHOT : TC_ACT_OK;
}

SETUP("cgroup_skb/egress", "deny_telnet")
int deny_telnet_setup(struct __sk_buff *skb)
{
	return cgskb_policy(skb);
}

CHECK("cgroup_skb/egress", "deny_telnet")
int deny_telnet_check(struct __sk_buff *skb)
{
	test_init();
	check_verdict(skb, POLICY_DENY);
	test_finish();
}

/* ---- A port user space denied (UDP 8080) is denied; the setup configures it. ---- */

PKTGEN("tc", "deny_configured_port")
int deny_configured_port_pktgen(struct __sk_buff *skb)
{
	struct pkt_udp4 p;

	pkt_udp4_init(&p, DST_IP, 8080);
	return pkt_skb_write(skb, &p) ? TC_ACT_SHOT : TC_ACT_OK;
}

SETUP("cgroup_skb/egress", "deny_configured_port")
int deny_configured_port_setup(struct __sk_buff *skb)
{
	__u16 port = 8080;
	__u8 one = 1;

	bpf_map_update_elem(&denied_ports, &port, &one, BPF_ANY);
	return cgskb_policy(skb);
}

CHECK("cgroup_skb/egress", "deny_configured_port")
int deny_configured_port_check(struct __sk_buff *skb)
{
	test_init();
	check_verdict(skb, POLICY_DENY);
	test_finish();
}

/* ---- TCP to 8080, not configured, is allowed; so is IPv6 (the policy is IPv4 only). ---- */

PKTGEN("tc", "allow_unlisted_port")
int allow_unlisted_port_pktgen(struct __sk_buff *skb)
{
	struct pkt_tcp4 p;

	pkt_tcp4_init(&p, DST_IP, 8080);
	return pkt_skb_write(skb, &p) ? TC_ACT_SHOT : TC_ACT_OK;
}

SETUP("cgroup_skb/egress", "allow_unlisted_port")
int allow_unlisted_port_setup(struct __sk_buff *skb)
{
	return cgskb_policy(skb);
}

CHECK("cgroup_skb/egress", "allow_unlisted_port")
int allow_unlisted_port_check(struct __sk_buff *skb)
{
	test_init();
	check_verdict(skb, POLICY_ALLOW);
	test_finish();
}

PKTGEN("tc", "allow_ipv6")
int allow_ipv6_pktgen(struct __sk_buff *skb)
{
	struct pkt_udp6 p;
	__be32 dst[4] = { bpf_htonl(0xfc00dead), bpf_htonl(0xbeef1234), 0, bpf_htonl(0xabcd) };

	pkt_udp6_init(&p, dst, TELNET_PORT);
	return pkt_skb_write(skb, &p) ? TC_ACT_SHOT : TC_ACT_OK;
}

SETUP("cgroup_skb/egress", "allow_ipv6")
int allow_ipv6_setup(struct __sk_buff *skb)
{
	return cgskb_policy(skb);
}

CHECK("cgroup_skb/egress", "allow_ipv6")
int allow_ipv6_check(struct __sk_buff *skb)
{
	test_init();
	check_verdict(skb, POLICY_ALLOW);
	test_finish();
}

/* ---- The port rules alone, as a table. ---- */

CHECK("cgroup_skb/egress", "port_rules")
int port_rules_check(struct __sk_buff *skb)
{
	__u16 port = 5000;
	__u8 one = 1;

	test_init();

	TEST("tcp_23_denied", { assert(port_denied(IPPROTO_TCP, 23)); });
	TEST("udp_23_allowed", { assert(!port_denied(IPPROTO_UDP, 23)); });
	TEST("tcp_22_allowed", { assert(!port_denied(IPPROTO_TCP, 22)); });
	TEST("configured_denied_both_protocols", {
		bpf_map_update_elem(&denied_ports, &port, &one, BPF_ANY);
		assert(port_denied(IPPROTO_TCP, 5000));
		assert(port_denied(IPPROTO_UDP, 5000));
		assert(!port_denied(IPPROTO_UDP, 5001));
	});

	test_finish();
}
