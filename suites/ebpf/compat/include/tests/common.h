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

#include <tests/check.h>

#define PKTGEN(progtype, name) __section(progtype "/test/" name "/pktgen")
#define SETUP(progtype, name) __section(progtype "/test/" name "/setup")
#define CHECK(progtype, name) __section(progtype "/test/" name "/check")



/* Outside TEST(): the whole test is skipped, or errors out. */
#define test_skip_now() return TEST_SKIP
#define test_error() return TEST_ERROR

#endif
