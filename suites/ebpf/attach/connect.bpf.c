/* SPDX-License-Identifier: GPL-2.0 */
/* cgroup/connect4 and cgroup/connect6 in the manner of Kmesh's km_manage: a connect to
 * loopback:reg_port registers the caller's network namespace (its netns cookie goes into
 * km_manage with the family and type of the socket that registered it), a connect to
 * loopback:dereg_port deregisters it, and connects from a registered namespace to the
 * "service" (svc_ip4:svc_port, or [::1]:svc_port) are rewritten to loopback:backend_port.
 * Every connect is allowed. The test is attach/connect_test.c. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "attach_maps.h"

#define SOCK_OK 1
#define LOOPBACK4 0x7f000001

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct km_config);
} km_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64); /* netns cookie */
	__type(value, struct km_entry);
} km_manage SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KM_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} km_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&km_counters, &which);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Registration and deregistration; whether DPORT was one of them. */
static __always_inline int km_control(struct bpf_sock_addr *ctx, const struct km_config *cfg,
				      __u16 dport)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);
	struct km_entry entry = { .family = ctx->family, .type = ctx->type };

	if (dport == cfg->reg_port) {
		bpf_map_update_elem(&km_manage, &cookie, &entry, BPF_ANY);
		count(KM_REGISTERED);
		return 1;
	}
	if (dport == cfg->dereg_port) {
		if (bpf_map_delete_elem(&km_manage, &cookie) == 0)
			count(KM_DEREGISTERED);
		return 1;
	}
	return 0;
}

static __always_inline int km_managed(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);

	return bpf_map_lookup_elem(&km_manage, &cookie) != 0;
}

SEC("cgroup/connect4")
int km_connect4(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct km_config *cfg = bpf_map_lookup_elem(&km_config, &zero);
	__u32 daddr = bpf_ntohl(ctx->user_ip4);
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);

	if (!cfg)
		return SOCK_OK;
	if (daddr == LOOPBACK4 && km_control(ctx, cfg, dport))
		return SOCK_OK;
	if (daddr == cfg->svc_ip4 && dport == cfg->svc_port && km_managed(ctx)) {
		ctx->user_ip4 = bpf_htonl(LOOPBACK4);
		ctx->user_port = bpf_htons(cfg->backend_port);
		count(KM_REDIRECTED4);
	}
	return SOCK_OK;
}

SEC("cgroup/connect6")
int km_connect6(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct km_config *cfg = bpf_map_lookup_elem(&km_config, &zero);
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2];
	__u32 a3 = ctx->user_ip6[3];
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);
	int loopback = (a0 | a1 | a2) == 0 && a3 == bpf_htonl(1);

	if (!cfg || !loopback)
		return SOCK_OK;
	if (km_control(ctx, cfg, dport))
		return SOCK_OK;
	if (dport == cfg->svc_port && km_managed(ctx)) {
		ctx->user_port = bpf_htons(cfg->backend_port);
		count(KM_REDIRECTED6);
	}
	return SOCK_OK;
}

char LICENSE[] SEC("license") = "GPL";
