/* SPDX-License-Identifier: GPL-2.0 */
/* Waypoint metadata: before the first bytes of a connection that was redirected to a waypoint,
 * sendmsg prepends the original destination as TLVs so the waypoint knows where the client
 * meant to go:
 *   TLV_ORG_DST_ADDR | length (u32, big endian) | address (4 or 16 bytes) | port (big endian)
 *   TLV_END          | 0 (u32)
 * Connect (cgroup/connect*) stores the original destination in waypoint_orig_dst, keyed by the
 * client's local port; sendmsg encodes it once and forgets it. */
#include "net.h"

#define TLV_ORG_DST_ADDR 0x01
#define TLV_END		 0xfe
#define TLV_HDR_LEN	 5 /* type + length */
#define TLV_IP4_LEN	 (4 + 2)
#define TLV_IP6_LEN	 (16 + 2)
#define TLV_IP4_TOTAL	 (TLV_HDR_LEN + TLV_IP4_LEN + TLV_HDR_LEN)
#define TLV_IP6_TOTAL	 (TLV_HDR_LEN + TLV_IP6_LEN + TLV_HDR_LEN)

struct orig_dst {
	__u32 family; /* AF_INET or AF_INET6 */
	__be32 addr[4]; /* IPv4: addr[0] */
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct orig_dst);
	__uint(max_entries, 1024);
} waypoint_orig_dst SEC(".maps");

static __always_inline void tlv_put_hdr(__u8 *p, __u8 type, __u32 len)
{
	p[0] = type;
	p[1] = len >> 24;
	p[2] = len >> 16;
	p[3] = len >> 8;
	p[4] = len;
}

/* Encode DST into [BUF, BUF_END) (a packet or a scratch buffer): returns the bytes written,
 * TLV_IP4_TOTAL or TLV_IP6_TOTAL, or -1 (nothing written) when the family is unknown or the
 * buffer is too short. */
static __always_inline int tlv_encode_orig_dst(void *buf, void *buf_end, const struct orig_dst *dst)
{
	__u8 *p = buf;

	if (dst->family == AF_INET) {
		if ((void *)(p + TLV_IP4_TOTAL) > buf_end)
			return -1;
		tlv_put_hdr(p, TLV_ORG_DST_ADDR, TLV_IP4_LEN);
		__builtin_memcpy(p + TLV_HDR_LEN, &dst->addr[0], 4);
		__builtin_memcpy(p + TLV_HDR_LEN + 4, &dst->port, 2);
		tlv_put_hdr(p + TLV_HDR_LEN + TLV_IP4_LEN, TLV_END, 0);
		return TLV_IP4_TOTAL;
	}
	if (dst->family == AF_INET6) {
		if ((void *)(p + TLV_IP6_TOTAL) > buf_end)
			return -1;
		tlv_put_hdr(p, TLV_ORG_DST_ADDR, TLV_IP6_LEN);
		__builtin_memcpy(p + TLV_HDR_LEN, dst->addr, 16);
		__builtin_memcpy(p + TLV_HDR_LEN + 16, &dst->port, 2);
		tlv_put_hdr(p + TLV_HDR_LEN + TLV_IP6_LEN, TLV_END, 0);
		return TLV_IP6_TOTAL;
	}
	return -1;
}

static __always_inline int sendmsg_encode(struct sk_msg_md *msg)
{
	__u32 key = msg->local_port;
	struct orig_dst *dst = bpf_map_lookup_elem(&waypoint_orig_dst, &key);
	__u32 len;

	if (!dst)
		return SK_PASS;
	len = dst->family == AF_INET ? TLV_IP4_TOTAL : TLV_IP6_TOTAL;
	if (bpf_msg_push_data(msg, 0, len, 0) || bpf_msg_pull_data(msg, 0, len, 0))
		return SK_PASS;
	if (tlv_encode_orig_dst((void *)(long)msg->data, (void *)(long)msg->data_end, dst) < 0)
		return SK_DROP; /* pushed room we could not fill: never send it half-written */
	bpf_map_delete_elem(&waypoint_orig_dst, &key);
	return SK_PASS;
}

SEC("sk_msg")
int sendmsg_waypoint(struct sk_msg_md *msg)
{
	return sendmsg_encode(msg);
}
