/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kmesh-style unit tests (test/bpf_ut/include/ut_common.h's shape, written for lab's compat
 * fixtures): PKTGEN, JUMP and CHECK(progtype, name) sections; the harness loads a fresh
 * collection per test, sets globals and registers tail calls by program name before the
 * stages, and takes the check's return code (0 error, 1 pass, 2 fail, 3 skip) as the verdict.
 */
#ifndef COMPAT_TESTS_UT_COMMON_H
#define COMPAT_TESTS_UT_COMMON_H

#include <tests/check.h>

#define PKTGEN(progtype, name) __section(progtype "/test/" name "/pktgen")
#define JUMP(progtype, name) __section(progtype "/test/" name "/jump")
#define CHECK(progtype, name) __section(progtype "/test/" name "/check")



#endif
