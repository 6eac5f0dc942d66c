/* SPDX-License-Identifier: GPL-2.0 */
/* A test whose section names no program type ("xpd", a typo of "xdp"): broken, saying which
 * section, never passed off as a skip. */
#include <lab/test.h>

CHECK("xpd", "typo_in_progtype")
int typo_in_progtype_check(struct xdp_md *ctx)
{
	return TEST_PASS;
}
