/* SPDX-License-Identifier: GPL-2.0 */
/* Test helpers for the suites' pktgen, setup and check programs: fixed test packets built on
 * the stack with valid checksums, written into an XDP or tc context, and the stage protocol's
 * prepended return code read back. Include after lab/test.h and the program under test. */
#pragma once

#include "../../src/net.h"

/* Addresses of the test packets (host order). */
#define PKT_CLIENT_IP  0x0a000001 /* 10.0.0.1 */
#define PKT_CLIENT_PORT 40000
#define PKT_PAYLOAD_LEN 8

/* MACs 02:00:00:00:00:LAST; set byte by byte so that no object needs a .rodata map. */
#define PKT_CLIENT_MAC_LAST 0x01
#define PKT_ROUTER_MAC_LAST 0xfe

static __always_inline void pkt_mac(__u8 *mac, __u8 last)
{
	mac[0] = 0x02;
	mac[1] = mac[2] = mac[3] = mac[4] = 0;
	mac[5] = last;
}

/* Test packets live on the stack, where the verifier wants every access aligned: each struct
 * starts with two bytes of padding so that its IP header is 4-byte aligned. The packet itself,
 * PKT_WIRE_LEN(T) bytes, starts at member eth. */
#define PKT_WIRE_LEN(T) (sizeof(T) - 2)

struct pkt_udp4 {
	__u16 pad; /* puts the IP header at a 4-byte boundary */
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	__u8 payload[PKT_PAYLOAD_LEN];
} __attribute__((packed, aligned(4)));

struct pkt_tcp4 {
	__u16 pad; /* puts the IP header at a 4-byte boundary */
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;
} __attribute__((packed, aligned(4)));

struct pkt_udp6 {
	__u16 pad; /* puts the IP header at a 4-byte boundary */
	struct ethhdr eth;
	struct ipv6hdr ip6;
	struct udphdr udp;
	__u8 payload[PKT_PAYLOAD_LEN];
} __attribute__((packed, aligned(4)));

/* An ICMP echo request header, without linux/icmp.h. */
struct pkt_icmp4 {
	__u16 pad; /* puts the IP header at a 4-byte boundary */
	struct ethhdr eth;
	struct iphdr ip;
	__u8 type, code;
	__u16 check, id, seq;
} __attribute__((packed, aligned(4)));

static __always_inline void pkt_eth(struct ethhdr *eth, __u16 proto)
{
	pkt_mac(eth->h_source, PKT_CLIENT_MAC_LAST);
	pkt_mac(eth->h_dest, PKT_ROUTER_MAC_LAST);
	eth->h_proto = bpf_htons(proto);
}

static __always_inline void pkt_ip4(struct iphdr *ip, __u8 proto, __u32 saddr, __u32 daddr,
				    __u16 l4_len)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(sizeof(*ip) + l4_len);
	ip->id = bpf_htons(1);
	ip->frag_off = bpf_htons(0x4000); /* DF */
	ip->ttl = 64;
	ip->protocol = proto;
	ip->saddr = bpf_htonl(saddr);
	ip->daddr = bpf_htonl(daddr);
	ip->check = 0;
	ip->check = net_csum_fold(net_csum_add(ip, sizeof(*ip), 0));
}

/* The IPv4 header's checksum verifies (sums to 0xffff, so folds to 0). */
static __always_inline int pkt_ip4_csum_ok(const struct iphdr *ip)
{
	return net_csum_fold(net_csum_add(ip, sizeof(*ip), 0)) == 0;
}

/* The UDP checksum over the IPv4 pseudo-header, UDP header and payload of P. */
static __always_inline __u16 pkt_udp4_csum(const struct pkt_udp4 *p)
{
	__u32 sum = 0;

	sum = net_csum_add(&p->ip.saddr, 8, sum);
	sum += bpf_htons(IPPROTO_UDP);
	sum += p->udp.len;
	sum = net_csum_add(&p->udp, sizeof(p->udp) + PKT_PAYLOAD_LEN, sum);
	return net_csum_fold(sum);
}

static __always_inline void pkt_udp4_init(struct pkt_udp4 *p, __u32 daddr, __u16 dport)
{
	pkt_eth(&p->eth, ETH_P_IP);
	pkt_ip4(&p->ip, IPPROTO_UDP, PKT_CLIENT_IP, daddr, sizeof(p->udp) + PKT_PAYLOAD_LEN);
	p->udp.source = bpf_htons(PKT_CLIENT_PORT);
	p->udp.dest = bpf_htons(dport);
	p->udp.len = bpf_htons(sizeof(p->udp) + PKT_PAYLOAD_LEN);
	__builtin_memcpy(p->payload, "lab-test", PKT_PAYLOAD_LEN);
	p->udp.check = 0;
	p->udp.check = pkt_udp4_csum(p);
}

static __always_inline void pkt_tcp4_init(struct pkt_tcp4 *p, __u32 daddr, __u16 dport)
{
	pkt_eth(&p->eth, ETH_P_IP);
	pkt_ip4(&p->ip, IPPROTO_TCP, PKT_CLIENT_IP, daddr, sizeof(p->tcp));
	__builtin_memset(&p->tcp, 0, sizeof(p->tcp));
	p->tcp.source = bpf_htons(PKT_CLIENT_PORT);
	p->tcp.dest = bpf_htons(dport);
	p->tcp.seq = bpf_htonl(1);
	p->tcp.doff = 5;
	p->tcp.syn = 1;
	p->tcp.window = bpf_htons(64240);
	/* the TCP checksum is left 0: nothing under test reads it */
}

static __always_inline void pkt_udp6_init(struct pkt_udp6 *p, const __be32 daddr[4], __u16 dport)
{
	pkt_eth(&p->eth, ETH_P_IPV6);
	__builtin_memset(&p->ip6, 0, sizeof(p->ip6));
	p->ip6.version = 6;
	p->ip6.payload_len = bpf_htons(sizeof(p->udp) + PKT_PAYLOAD_LEN);
	p->ip6.nexthdr = IPPROTO_UDP;
	p->ip6.hop_limit = 64;
	p->ip6.saddr.in6_u.u6_addr32[0] = bpf_htonl(0xfc000000);
	p->ip6.saddr.in6_u.u6_addr32[3] = bpf_htonl(1);
	__builtin_memcpy(&p->ip6.daddr, daddr, 16);
	p->udp.source = bpf_htons(PKT_CLIENT_PORT);
	p->udp.dest = bpf_htons(dport);
	p->udp.len = p->ip6.payload_len;
	__builtin_memcpy(p->payload, "lab-test", PKT_PAYLOAD_LEN);
	p->udp.check = 0xffff; /* not verified by anything under test */
}

static __always_inline void pkt_icmp4_init(struct pkt_icmp4 *p, __u32 daddr)
{
	pkt_eth(&p->eth, ETH_P_IP);
	pkt_ip4(&p->ip, IPPROTO_ICMP, PKT_CLIENT_IP, daddr, 8);
	p->type = 8;
	p->code = 0;
	p->id = bpf_htons(1);
	p->seq = bpf_htons(1);
	p->check = 0;
	p->check = net_csum_fold(net_csum_add(&p->type, 8, 0));
}

/* pktgen: make the XDP packet exactly as long as *P's wire bytes (the runner hands pktgen a
 * zeroed buffer of its own size) and copy them in. Returns 0, or -1 if it cannot. */
#define pkt_xdp_write(ctx, p)                                                              \
	({                                                                                 \
		int __r = -1;                                                              \
		const int __len = PKT_WIRE_LEN(*(p));                                      \
		long __have = (long)(ctx)->data_end - (long)(ctx)->data;                   \
		if (!bpf_xdp_adjust_tail((ctx), __len - (int)__have)) {                    \
			void *__d = (void *)(long)(ctx)->data;                             \
			if (__d + __len <= (void *)(long)(ctx)->data_end) {                \
				__builtin_memcpy(__d, &(p)->eth, __len);                   \
				__r = 0;                                                   \
			}                                                                  \
		}                                                                          \
		__r;                                                                       \
	})

/* pktgen: likewise for a tc (or other skb) context. */
#define pkt_skb_write(skb, p)                                                              \
	({                                                                                 \
		int __r = -1;                                                              \
		if (!bpf_skb_change_tail((skb), PKT_WIRE_LEN(*(p)), 0) &&                  \
		    !bpf_skb_store_bytes((skb), 0, &(p)->eth, PKT_WIRE_LEN(*(p)), 0))      \
			__r = 0;                                                           \
		__r;                                                                       \
	})

/* check (XDP or tc): reads the stage's return code, which the runner prepended, and the
 * packet after it into *P. Returns 0, or -1 if the data is too short. */
#define pkt_read_after_retval(ctx, p, retval_out)                                          \
	({                                                                                 \
		int __r = -1;                                                              \
		const int __len = PKT_WIRE_LEN(*(p));                                      \
		void *__d = (void *)(long)(ctx)->data;                                     \
		if (__d + sizeof(__u32) + __len <= (void *)(long)(ctx)->data_end) {        \
			__builtin_memcpy((retval_out), __d, sizeof(__u32));                \
			__builtin_memcpy(&(p)->eth, __d + sizeof(__u32), __len);           \
			__r = 0;                                                           \
		}                                                                          \
		__r;                                                                       \
	})

/* check (cgroup_skb): the prepended return code. cgroup_skb test runs take the first 14 bytes
 * as an Ethernet header (where the code lies) and start the packet after it, so read it
 * relative to the MAC header. Returns 0 on success. */
static __always_inline int pkt_cgskb_retval(struct __sk_buff *skb, __u32 *retval)
{
	return bpf_skb_load_bytes_relative(skb, 0, retval, sizeof(*retval), BPF_HDR_START_MAC);
}
