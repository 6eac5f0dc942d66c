// SPDX-License-Identifier: Apache-2.0
/*
 * A program type the kernel cannot test-run (sk_msg): its test is loaded and verified, then
 * skipped with the reason, as Cilium's and Kmesh's harnesses leave such programs to attach
 * tests.
 */
#include <bpf/api.h>
#include <tests/common.h>

#define SK_PASS 1

CHECK("sk_msg", "redirect_policy")
int redirect_policy_check(struct sk_msg_md *msg)
{
	return SK_PASS;
}

char _license[] __section("license") = "GPL";
