/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The check side both projects' test headers share (Kmesh's ut_common.h grew from Cilium's
 * common.h): a check opens with test_init(), holds TEST(name, { ... }) blocks that may
 * test_fail() or assert(), and ends with test_finish(), which returns the suite's status, the
 * verdict the harness reads.
 */
#ifndef COMPAT_TESTS_CHECK_H
#define COMPAT_TESTS_CHECK_H

#include <tests/result.h>

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

#endif
