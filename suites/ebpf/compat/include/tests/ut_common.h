/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kmesh-style unit tests (test/bpf_ut/include/ut_common.h's shape, written for lab's compat
 * fixtures): PKTGEN, JUMP and CHECK(progtype, name) sections; the harness loads a fresh
 * collection per test, sets globals and registers tail calls by program name before the
 * stages, and takes the check's return code (0 error, 1 pass, 2 fail, 3 skip) as the verdict.
 */
#ifndef COMPAT_TESTS_UT_COMMON_H
#define COMPAT_TESTS_UT_COMMON_H

#include <tests/result.h>

#define PKTGEN(progtype, name) __section(progtype "/test/" name "/pktgen")
#define JUMP(progtype, name) __section(progtype "/test/" name "/jump")
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

#define test_fail()                                                              \
	{                                                                        \
		__test_status = TEST_FAIL;                                       \
		break;                                                           \
	}

#define test_finish() return __suite_status

#endif
