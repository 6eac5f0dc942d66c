// SPDX-License-Identifier: Apache-2.0
/*
 * A BTF map-in-map with a static initialiser, as libbpf and cilium/ebpf read it: the outer
 * array of maps declares its inner maps' shape with __array(values, struct inner) and puts
 * backend_a at slot 0; slot 1 stays empty. A check writes through the outer map and reads
 * back through backend_a itself, which proves slot 0 holds that very map.
 */
#include <bpf/api.h>
#include <tests/common.h>

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u64));
	__uint(max_entries, 4);
};

struct inner backend_a __section(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(key_size, sizeof(__u32));
	__uint(max_entries, 2);
	__array(values, struct inner);
} backends __section(".maps") = {
	.values = {
		[0] = &backend_a,
	},
};

CHECK("tc", "slot_holds_backend_a")
int slot_holds_backend_a_check(struct __sk_buff *ctx)
{
	__u32 slot = 0, key = 2;
	__u64 mark = 0xfeed, *seen;
	void *inner = map_lookup_elem(&backends, &slot);

	test_init();
	TEST("slot 0 is filled", {
		assert(inner);
	});
	if (inner)
		map_update_elem(inner, &key, &mark, BPF_ANY);
	seen = map_lookup_elem(&backend_a, &key);
	TEST("it is backend_a", {
		assert(seen && *seen == 0xfeed);
	});
	test_finish();
}

CHECK("tc", "empty_slot_is_empty")
int empty_slot_is_empty_check(struct __sk_buff *ctx)
{
	__u32 slot = 1;

	return map_lookup_elem(&backends, &slot) ? TEST_FAIL : TEST_PASS;
}

char _license[] __section("license") = "GPL";
