/* SPDX-License-Identifier: GPL-2.0 */
/* Which network namespaces the mesh manages, and what connect does for them (in the manner of
 * Kmesh's km_manage). A process registers its netns by connecting to the control address
 * 0.0.0.0:9291 ([::]:9291) and deregisters it with port 9292; km_manage holds the netns cookies
 * of registered namespaces. Connections from a managed netns to anything but loopback are
 * redirected to the node's waypoint, 127.0.0.1:15008 ([::1]:15008). */
#include "net.h"

#define KM_CTL_ENABLE	9291
#define KM_CTL_DISABLE	9292
#define KM_WAYPOINT4	0x7f000001 /* 127.0.0.1, host order */
#define KM_WAYPOINT_PORT 15008
#define SOCK_OK		1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64); /* netns cookie */
	__type(value, __u32); /* 1: managed */
	__uint(max_entries, 256);
} km_manage SEC(".maps");

static __always_inline void km_manage_set(__u64 cookie, int enable)
{
	__u32 on = 1;

	if (enable)
		bpf_map_update_elem(&km_manage, &cookie, &on, BPF_ANY);
	else
		bpf_map_delete_elem(&km_manage, &cookie);
}

static __always_inline int km_is_managed(__u64 cookie)
{
	__u32 *v = bpf_map_lookup_elem(&km_manage, &cookie);

	return v && *v;
}

/* A control connect: (un)register the caller's netns. Returns 1 if DPORT was a control port. */
static __always_inline int km_control(__u64 cookie, __u16 dport)
{
	if (dport == KM_CTL_ENABLE) {
		km_manage_set(cookie, 1);
		return 1;
	}
	if (dport == KM_CTL_DISABLE) {
		km_manage_set(cookie, 0);
		return 1;
	}
	return 0;
}

static __always_inline int connect4_handle(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);
	__u32 daddr = bpf_ntohl(ctx->user_ip4);
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);

	if (daddr == 0 && km_control(cookie, dport))
		return SOCK_OK;
	if (!km_is_managed(cookie) || (daddr >> 24) == 127)
		return SOCK_OK;
	ctx->user_ip4 = bpf_htonl(KM_WAYPOINT4);
	ctx->user_port = bpf_htons(KM_WAYPOINT_PORT);
	return SOCK_OK;
}

static __always_inline int connect6_handle(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);
	int unspecified = (a0 | a1 | a2 | a3) == 0;
	int loopback = (a0 | a1 | a2) == 0 && a3 == bpf_htonl(1);

	if (unspecified && km_control(cookie, dport))
		return SOCK_OK;
	if (!km_is_managed(cookie) || loopback)
		return SOCK_OK;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = 0;
	ctx->user_ip6[3] = bpf_htonl(1);
	ctx->user_port = bpf_htons(KM_WAYPOINT_PORT);
	return SOCK_OK;
}

SEC("cgroup/connect4")
int km_connect4(struct bpf_sock_addr *ctx)
{
	return connect4_handle(ctx);
}

SEC("cgroup/connect6")
int km_connect6(struct bpf_sock_addr *ctx)
{
	return connect6_handle(ctx);
}
