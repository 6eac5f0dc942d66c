/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The compat fixtures' own minimal BPF environment, written for lab in the way Cilium's
 * bpf/include and Kmesh's bpf/include provide theirs: the fixtures build with -nostdinc, so
 * nothing here comes from the system. Types, section and map macros (BTF-defined maps and
 * iproute2's legacy struct bpf_elf_map), the helpers the fixtures call, and the packet
 * structures they parse.
 */
#ifndef COMPAT_BPF_API_H
#define COMPAT_BPF_API_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

#define NULL ((void *)0)

#define __section(NAME) __attribute__((section(NAME), used))
#define SEC(NAME) __section(NAME)
#define __always_inline inline __attribute__((always_inline))
#define __maybe_unused __attribute__((unused))

/* BTF-defined map members, as libbpf's bpf_helpers.h spells them. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_HASH_OF_MAPS = 13,
};

#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_F_NO_PREALLOC (1U << 0)

/* iproute2's pinning values (Cilium's LIBBPF_PIN_BY_NAME is the same 1). */
#define PIN_NONE 0
#define PIN_OBJECT_NS 1
#define PIN_GLOBAL_NS 2
#define LIBBPF_PIN_BY_NAME 1

/* iproute2's legacy map definition in section "maps" (tc's loader, Cilium before BTF maps). */
struct bpf_elf_map {
	__u32 type;
	__u32 size_key;
	__u32 size_value;
	__u32 max_elem;
	__u32 flags;
	__u32 id;
	__u32 pinning;
	__u32 inner_id;
	__u32 inner_idx;
};

/* iproute2's tail call sections: program KEY of the prog array whose id is ID. */
#define __stringify2(x) #x
#define __stringify(x) __stringify2(x)
#define __section_tail(ID, KEY) __section(__stringify(ID) "/" __stringify(KEY))

enum xdp_action { XDP_ABORTED = 0, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

/* struct __sk_buff up to data_end, at the kernel's offsets (uapi/linux/bpf.h). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
};

struct sk_msg_md {
	void *data;
	void *data_end;
};

/* Helpers, by their numbers in the kernel's helper table. */
static void *(*map_lookup_elem)(const void *map, const void *key) = (void *)1;
static long (*map_update_elem)(const void *map, const void *key, const void *value,
			       __u64 flags) = (void *)2;
static long (*map_delete_elem)(const void *map, const void *key) = (void *)3;
static long (*tail_call)(void *ctx, const void *map, __u32 index) = (void *)12;
static long (*skb_change_tail)(struct __sk_buff *skb, __u32 len, __u64 flags) = (void *)38;

/* A tail call with a constant slot, as Cilium's tail_call_static. */
#define tail_call_static(ctx, map, slot) tail_call((ctx), &(map), (slot))

#define ETH_P_IP 0x0800
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

struct ethhdr {
	__u8 h_dest[6];
	__u8 h_source[6];
	__be16 h_proto;
} __attribute__((packed));

struct iphdr {
	__u8 ihl_version;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
} __attribute__((packed));

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
} __attribute__((packed));

#define bpf_htons(x) ((__be16)__builtin_bswap16((__u16)(x)))
#define bpf_ntohs(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define bpf_htonl(x) ((__be32)__builtin_bswap32((__u32)(x)))

#endif
