/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The result buffer both harness styles write: suite_result_map[0], 8192 bytes, holding a
 * protobuf SuiteResult { repeated TestResult results = 1; } with
 * TestResult { string name = 1; Status status = 2; }, one record per TEST(), the outer length
 * as a two-byte varint the way Cilium's common.h writes it. The check program's return code
 * is the test's verdict; the records are its named sub-results, and there may be none.
 */
#ifndef COMPAT_TESTS_RESULT_H
#define COMPAT_TESTS_RESULT_H

#include <bpf/api.h>

/* Statuses: what a check program returns, and a TestResult's status. */
#define TEST_ERROR 0
#define TEST_PASS 1
#define TEST_FAIL 2
#define TEST_SKIP 3

#define RESULT_SIZE 8192
/* Room a record may take: tag, 2-byte length, name tag and length, a name, status. */
#define RESULT_RECORD_MAX 160

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, RESULT_SIZE);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} suite_result_map __section(".maps");

/* Appends TestResult{name, status} at off; returns the offset after it (off unchanged if the
 * buffer is full). NAME_LEN must be a constant below 128. */
static __always_inline __u32 result_put(__u8 *buf, __u32 off, const char *name,
					__u32 name_len, __u8 status)
{
	__u32 inner = 2 + name_len + 2;

	if (off > RESULT_SIZE - RESULT_RECORD_MAX)
		return off;
	buf[off] = (1 << 3) | 2;
	buf[off + 1] = (inner & 0x7f) | 0x80;
	buf[off + 2] = inner >> 7;
	buf[off + 3] = (1 << 3) | 2;
	buf[off + 4] = name_len;
	__builtin_memcpy(buf + off + 5, name, name_len);
	buf[off + 5 + name_len] = (2 << 3) | 0;
	buf[off + 6 + name_len] = status;
	return off + 7 + name_len;
}

#endif
