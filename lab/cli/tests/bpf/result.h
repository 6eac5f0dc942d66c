/* A hand-encoded SuiteResult for the runner's e2e tests (lab/cli/tests/bpf_runner.rs); the real
 * suite header lives elsewhere. SuiteResult{results=1: TestResult{name=1, status=2, test_log=3:
 * Log{fmt=1, args=2 (fixed64)}}}, written into suite_result_map[0]. */
#ifndef LAB_TEST_RESULT_H
#define LAB_TEST_RESULT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define LAB_PASS 1
#define LAB_FAIL 2

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 8192);
	__uint(max_entries, 1);
} suite_result_map SEC(".maps");

/* results { name: NAME, status: STATUS } — NAME a string literal under 120 bytes. */
#define LAB_RESULT(NAME, STATUS)                                                   \
	do {                                                                       \
		__u32 lab_key = 0;                                                 \
		__u8 *lab_v = bpf_map_lookup_elem(&suite_result_map, &lab_key);    \
		if (lab_v) {                                                       \
			const char lab_n[] = NAME;                                 \
			const __u32 lab_len = sizeof(lab_n) - 1;                   \
			lab_v[0] = 0x0a;                                           \
			lab_v[1] = lab_len + 4;                                    \
			lab_v[2] = 0x0a;                                           \
			lab_v[3] = lab_len;                                        \
			__builtin_memcpy(lab_v + 4, lab_n, sizeof(lab_n) - 1);     \
			lab_v[4 + lab_len] = 0x10;                                 \
			lab_v[5 + lab_len] = (STATUS);                             \
		}                                                                  \
	} while (0)

/* results { name: NAME, status: FAIL, test_log { fmt: FMT, args: [A, B] } } */
#define LAB_FAIL_LOG(NAME, FMT, A, B)                                              \
	do {                                                                       \
		__u32 lab_key = 0;                                                 \
		__u8 *lab_v = bpf_map_lookup_elem(&suite_result_map, &lab_key);    \
		if (lab_v) {                                                       \
			const char lab_n[] = NAME;                                 \
			const char lab_f[] = FMT;                                  \
			const __u32 ln = sizeof(lab_n) - 1, lf = sizeof(lab_f) - 1; \
			const __u32 log_len = 2 + lf + 9 + 9;                      \
			__u64 a = (A), b = (B);                                    \
			__u8 *p = lab_v;                                           \
			p[0] = 0x0a;                                               \
			p[1] = 2 + ln + 2 + 2 + log_len;                           \
			p[2] = 0x0a;                                               \
			p[3] = ln;                                                 \
			__builtin_memcpy(p + 4, lab_n, sizeof(lab_n) - 1);         \
			p += 4 + ln;                                               \
			p[0] = 0x10;                                               \
			p[1] = LAB_FAIL;                                           \
			p[2] = 0x1a;                                               \
			p[3] = log_len;                                            \
			p[4] = 0x0a;                                               \
			p[5] = lf;                                                 \
			__builtin_memcpy(p + 6, lab_f, sizeof(lab_f) - 1);         \
			p += 6 + lf;                                               \
			p[0] = 0x11;                                               \
			__builtin_memcpy(p + 1, &a, 8);                            \
			p[9] = 0x11;                                               \
			__builtin_memcpy(p + 10, &b, 8);                           \
		}                                                                  \
	} while (0)

#endif
