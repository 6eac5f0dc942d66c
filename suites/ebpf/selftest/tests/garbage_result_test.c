/* SPDX-License-Identifier: GPL-2.0 */
/* Checks that write a result the host cannot trust, each broken: garbage bytes, a TestResult
 * longer than the buffer holds, and a well-formed verdict of ERROR. Written by hand, not with
 * test_init()/test_finish(). */
#include <lab/test.h>

static __always_inline __u8 *result_buf(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&suite_result_map, &zero);
}

CHECK("xdp", "garbage")
int garbage_check(struct xdp_md *ctx)
{
	__u8 *buf = result_buf();

	if (!buf)
		return TEST_ERROR;
	/* field 31 with wire type 7 (there is none), then a varint that never ends */
	buf[0] = 0xff;
	buf[1] = 0xff;
	buf[2] = 0xff;
	buf[3] = 0xff;
	buf[4] = 0xff;
	return TEST_PASS;
}

CHECK("xdp", "truncated")
int truncated_check(struct xdp_md *ctx)
{
	__u8 *buf = result_buf();

	if (!buf)
		return TEST_ERROR;
	/* results: a TestResult of 16000 bytes (0x80 0x7d) in an 8192-byte buffer */
	buf[0] = LAB_KEY_RESULT;
	buf[1] = 0x80;
	buf[2] = 0x7d;
	buf[3] = LAB_KEY_NAME;
	buf[4] = 1;
	buf[5] = 'x';
	return TEST_PASS;
}

CHECK("xdp", "status_error")
int status_error_check(struct xdp_md *ctx)
{
	__u8 *buf = result_buf();

	if (!buf)
		return TEST_ERROR;
	/* results { name: "" status: ERROR } written out in full */
	buf[0] = LAB_KEY_RESULT;
	buf[1] = 4;
	buf[2] = LAB_KEY_NAME;
	buf[3] = 0;
	buf[4] = LAB_KEY_STATUS;
	buf[5] = TEST_ERROR;
	return TEST_ERROR;
}
