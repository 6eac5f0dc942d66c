/* SPDX-License-Identifier: GPL-2.0 */
/* An egress port policy for a cgroup: IPv4 TCP/UDP packets to a denied destination port are
 * dropped. Telnet (TCP 23) is always denied; user space adds ports to denied_ports (host
 * order). Other packets, IPv6 included, are allowed. cgroup_skb programs see the packet from
 * the network header on and cannot use direct packet access reliably, so this reads with
 * bpf_skb_load_bytes. */
#include "net.h"

#define POLICY_DENY  0
#define POLICY_ALLOW 1
#define TELNET_PORT  23

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, __u8);
	__uint(max_entries, 64);
} denied_ports SEC(".maps");

static __always_inline int port_denied(__u8 proto, __u16 dport)
{
	if (proto == IPPROTO_TCP && dport == TELNET_PORT)
		return 1;
	return bpf_map_lookup_elem(&denied_ports, &dport) != 0;
}

static __always_inline int cgskb_policy(struct __sk_buff *skb)
{
	struct iphdr ip;
	__be16 ports[2];

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return POLICY_ALLOW;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
		return POLICY_DENY; /* claims IPv4, shorter than its header */
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return POLICY_ALLOW;
	if (bpf_skb_load_bytes(skb, (ip.ihl & 0xf) * 4, ports, sizeof(ports)))
		return POLICY_DENY;
	return port_denied(ip.protocol, bpf_ntohs(ports[1])) ? POLICY_DENY : POLICY_ALLOW;
}

SEC("cgroup_skb/egress")
int egress_port_policy(struct __sk_buff *skb)
{
	return cgskb_policy(skb);
}
