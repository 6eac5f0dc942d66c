/* A test object without suite_result_map. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp/test/nomap/check")
int nomap_check(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
