// SPDX-License-Identifier: Apache-2.0
/*
 * Cilium-style tests that rely on the harness's shared state: the object is loaded once, its
 * tests run in name order, and only suite_result_map and mock_skb_meta_map are cleared between
 * them. The request (test 1) creates a connection entry; the reply (test 2) must find it. The
 * mock metadata written by test 1 must be gone by test 3.
 */
#include <bpf/api.h>
#include <tests/common.h>

struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ct_key);
	__type(value, __u32);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_map __section(".maps");

/* Cilium's mocked skb metadata: the harness clears it between tests. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} mock_skb_meta_map __section(".maps");

CHECK("tc", "t1_request_creates_entry")
int request_check(struct __sk_buff *ctx)
{
	struct ct_key key = { .saddr = 1, .daddr = 2, .sport = 3, .dport = 4 };
	__u32 state = 1, zero = 0, meta = 0x5eed;

	test_init();
	TEST("entry created", {
		assert(map_update_elem(&ct_map, &key, &state, BPF_NOEXIST) == 0);
	});
	map_update_elem(&mock_skb_meta_map, &zero, &meta, BPF_ANY);
	test_finish();
}

CHECK("tc", "t2_reply_finds_entry")
int reply_check(struct __sk_buff *ctx)
{
	struct ct_key reverse = { .saddr = 1, .daddr = 2, .sport = 3, .dport = 4 };
	__u32 *state = map_lookup_elem(&ct_map, &reverse);

	test_init();
	TEST("entry from the request", {
		assert(state && *state == 1);
	});
	test_finish();
}

CHECK("tc", "t3_mock_meta_is_cleared")
int meta_check(struct __sk_buff *ctx)
{
	__u32 zero = 0, *meta = map_lookup_elem(&mock_skb_meta_map, &zero);

	if (!meta)
		return TEST_ERROR;
	return *meta == 0 ? TEST_PASS : TEST_FAIL;
}

char _license[] __section("license") = "GPL";
