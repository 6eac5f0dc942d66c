/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cilium-style unit tests (bpf/tests/common.h's shape, written for lab's compat fixtures):
 * PKTGEN, SETUP and CHECK sections <progtype>/test/<name>/<stage>; a check opens with
 * test_init(), holds TEST(name, { ... }) blocks that may test_fail(), and ends with
 * test_finish(), which returns the suite's status. The harness loads an object once, runs its
 * tests in name order, and clears suite_result_map and mock_skb_meta_map between tests.
 */
#ifndef COMPAT_TESTS_COMMON_H
#define COMPAT_TESTS_COMMON_H

#include <tests/result.h>

#define PKTGEN(progtype, name) __section(progtype "/test/" name "/pktgen")
#define SETUP(progtype, name) __section(progtype "/test/" name "/setup")
#define CHECK(progtype, name) __section(progtype "/test/" name "/check")

#define test_init()                                                              \
	__u32 __result_key = 0;                                                  \
	__u8 *__result = map_lookup_elem(&suite_result_map, &__result_key);      \
	__u32 __result_off = 0;                                                  \
	__u8 __suite_status = TEST_PASS;                                         \
	if (!__result)                                                           \
		return TEST_ERROR

#define TEST(NAME, BODY)                                                         \
	do {                                                                     \
		__u8 __test_status = TEST_PASS;                                  \
		do {                                                             \
			BODY                                                     \
		} while (0);                                                     \
		__result_off = result_put(__result, __result_off, NAME,          \
					  sizeof(NAME) - 1, __test_status);      \
		if (__test_status == TEST_FAIL)                                  \
			__suite_status = TEST_FAIL;                              \
	} while (0)

/* Inside TEST(): this sub-test fails, and the test with it. */
#define test_fail()                                                              \
	{                                                                        \
		__test_status = TEST_FAIL;                                       \
		break;                                                           \
	}

#define assert(cond)                                                             \
	if (!(cond))                                                             \
	test_fail()

#define test_finish() return __suite_status

/* Outside TEST(): the whole test is skipped, or errors out. */
#define test_skip_now() return TEST_SKIP
#define test_error() return TEST_ERROR

#endif
