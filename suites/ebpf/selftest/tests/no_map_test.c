/* SPDX-License-Identifier: GPL-2.0 */
/* An object without suite_result_map (so without lab/test.h, which defines it): the runner
 * reports result_map null and the host says broken. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp/test/no_map/check")
int no_map_check(struct xdp_md *ctx)
{
	return 1;
}

char _license[] SEC("license") = "GPL";
