/* SPDX-License-Identifier: GPL-2.0 */
/* Shared by the production programs under src/: headers, addresses and checksum helpers. */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* One's complement sum of LEN bytes at P (LEN a compile-time constant), added to SUM.
 * Words are summed in host order: the folded result is stored as is, the usual trick. */
static __always_inline __u32 net_csum_add(const void *p, const int len, __u32 sum)
{
	const __u16 *w = p;

#pragma unroll
	for (int i = 0; i < len / 2; i++)
		sum += w[i];
	if (len & 1)
		sum += ((const __u8 *)p)[len - 1];
	return sum;
}

static __always_inline __u16 net_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* RFC 1624 incremental update of checksum CHECK when a 32-bit field goes FROM -> TO. */
static __always_inline __u16 net_csum_replace4(__u16 check, __u32 from, __u32 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~(from & 0xffff);
	sum += (__u16)~(from >> 16);
	sum += to & 0xffff;
	sum += to >> 16;
	return net_csum_fold(sum);
}

/* Likewise for a 16-bit field. */
static __always_inline __u16 net_csum_replace2(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from;
	sum += to;
	return net_csum_fold(sum);
}
