/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lab/test.h: eBPF unit tests for the lab, in the style of Cilium's and Kmesh's.
 *
 * A test is up to three programs in sections <progtype>/test/<name>/<stage>, declared with
 * PKTGEN, SETUP (or JUMP) and CHECK. The check program opens with test_init(), may hold
 * TEST(name, body) blocks, and ends with test_finish(), which leaves the verdict in
 * suite_result_map[0] as a protobuf (see README.md beside this directory):
 *
 *   SuiteResult { repeated TestResult results = 1; repeated Log suite_log = 2; }
 *   TestResult  { string name = 1; Status status = 2; repeated Log test_log = 3; }
 *   Log         { string fmt = 1; repeated fixed64 args = 2 (packed); }
 *   Status      { ERROR = 0; PASS = 1; FAIL = 2; SKIP = 3; }
 *
 * The check's return code is the test's verdict, as in Cilium's and Kmesh's harnesses;
 * test_finish() returns it. TAIL_CALL(progtype, map, index) marks a program that the lab puts
 * into the object's prog array `map` at `index` before the stages run: lab's older alias of a
 * static `.values` initialiser, which lab's loader reads as libbpf and cilium/ebpf do.
 *
 * The encoder is plain C: every write is a constant number of bytes at an offset checked
 * against the buffer first, so the verifier can bound it, and defining LAB_TEST_HOST before
 * including this header compiles the same check functions for the host, writing into
 * lab_test_host_result (which the host program defines) instead of the map.
 */
#ifndef LAB_TEST_H
#define LAB_TEST_H

#include <linux/types.h>
#include <linux/bpf.h>

#ifdef LAB_TEST_HOST
#include <string.h>
#define LAB_SEC(name)
#define LAB_MEMCPY(dst, src, n) memcpy((dst), (src), (n))
#else
#include <bpf/bpf_helpers.h>
#define LAB_SEC(name) __attribute__((section(name), used))
#define LAB_MEMCPY(dst, src, n) __builtin_memcpy((dst), (src), (n))
#endif

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Test statuses: the protobuf's Status, and what a check program returns. */
#define TEST_ERROR 0
#define TEST_PASS 1
#define TEST_FAIL 2
#define TEST_SKIP 3

/* The value size of suite_result_map. */
#define LAB_RESULT_SIZE 8192
/* The most arguments one test_log() takes. */
#define LAB_LOG_MAX_ARGS 12
/* The longest test name or log format, in bytes with its terminating NUL. */
#define LAB_STR_MAX 1024
/* Bytes kept free for test_finish(): its own verdict, the overflow note and the end mark. */
#define LAB_FINISH_RESERVE 128

/* Protobuf keys: (field number << 3) | wire type. */
#define LAB_PB_VARINT 0
#define LAB_PB_LEN 2
#define LAB_PB_KEY(field, wire) (((field) << 3) | (wire))
#define LAB_KEY_RESULT LAB_PB_KEY(1, LAB_PB_LEN)    /* SuiteResult.results */
#define LAB_KEY_SUITE_LOG LAB_PB_KEY(2, LAB_PB_LEN) /* SuiteResult.suite_log */
#define LAB_KEY_NAME LAB_PB_KEY(1, LAB_PB_LEN)      /* TestResult.name */
#define LAB_KEY_STATUS LAB_PB_KEY(2, LAB_PB_VARINT) /* TestResult.status */
#define LAB_KEY_TEST_LOG LAB_PB_KEY(3, LAB_PB_LEN)  /* TestResult.test_log */
#define LAB_KEY_FMT LAB_PB_KEY(1, LAB_PB_LEN)       /* Log.fmt */
#define LAB_KEY_ARGS LAB_PB_KEY(2, LAB_PB_LEN)      /* Log.args, packed */

#define LAB_STRINGIFY2(x) #x
#define LAB_STRINGIFY(x) LAB_STRINGIFY2(x)

#ifdef LAB_TEST_HOST
extern __u8 lab_test_host_result[LAB_RESULT_SIZE];
#define LAB_RESULT_LOOKUP(key) ((void)(key), lab_test_host_result)
#else
/* The check program's verdict: one entry (key 0) of LAB_RESULT_SIZE bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[LAB_RESULT_SIZE]);
} suite_result_map SEC(".maps");
#define LAB_RESULT_LOOKUP(key) ((__u8 *)bpf_map_lookup_elem(&suite_result_map, (key)))
#endif

/* Where test_init() .. test_finish() are in the result buffer. */
struct lab_test_state {
	__u8 *buf;          /* the map value */
	__u32 off;          /* the next byte to write */
	__u32 test_start;   /* the open TestResult's 2-byte length */
	__u32 status_at;    /* the open TestResult's status byte */
	__u32 dropped_logs; /* logs that did not fit */
	__u32 dropped_tests; /* TEST blocks that did not fit */
	__u8 test_open;     /* a TEST block's record is being written */
	__u8 test_status;
	__u8 suite_status;
};

/* Whether n more bytes fit below the finish reserve; counts nothing. `n` is a constant once
 * inlined, so this one test on `off` bounds every write of the record that follows. */
static __always_inline int lab_room(const struct lab_test_state *s, __u32 n)
{
	if (n > LAB_RESULT_SIZE - LAB_FINISH_RESERVE)
		return 0;
	return s->off <= LAB_RESULT_SIZE - LAB_FINISH_RESERVE - n;
}

static __always_inline void lab_put(struct lab_test_state *s, __u8 byte)
{
	s->buf[s->off] = byte;
	s->off++;
}

/* A length as a two-byte varint (not minimal for lengths under 128, which protobuf allows),
 * so it can be written before the bytes it counts are known; lengths are under 16384. */
static __always_inline void lab_put_len(struct lab_test_state *s, __u32 len)
{
	lab_put(s, 0x80 | (len & 0x7f));
	lab_put(s, (len >> 7) & 0x7f);
}

/* A fixed64, little-endian whatever the byte order of the machine. */
static __always_inline void lab_put_u64(struct lab_test_state *s, __u64 v)
{
	lab_put(s, v);
	lab_put(s, v >> 8);
	lab_put(s, v >> 16);
	lab_put(s, v >> 24);
	lab_put(s, v >> 32);
	lab_put(s, v >> 40);
	lab_put(s, v >> 48);
	lab_put(s, v >> 56);
}

/* Sets a status; a failure is not undone by a later skip or pass. */
static __always_inline void lab_set_status(struct lab_test_state *s, int in_test, __u8 status)
{
	__u8 *slot = in_test ? &s->test_status : &s->suite_status;

	if (*slot != TEST_FAIL)
		*slot = status;
}

/* Appends a Log to the open TEST block (in_test) or to the suite log. */
static __always_inline void lab_log(struct lab_test_state *s, int in_test, const char *fmt,
				    __u32 fmt_len, const __u64 *args, __u32 nargs)
{
	__u32 args_len = nargs ? 2 + 8 * nargs : 0;
	__u32 body = 1 + 2 + fmt_len + args_len;
	__u32 i;

	if ((in_test && !s->test_open) || !lab_room(s, 1 + 2 + body)) {
		s->dropped_logs++;
		return;
	}
	lab_put(s, in_test ? LAB_KEY_TEST_LOG : LAB_KEY_SUITE_LOG);
	lab_put_len(s, body);
	lab_put(s, LAB_KEY_FMT);
	lab_put_len(s, fmt_len);
	LAB_MEMCPY(s->buf + s->off, fmt, fmt_len);
	s->off += fmt_len;
	if (nargs) {
		lab_put(s, LAB_KEY_ARGS);
		lab_put(s, 8 * nargs); /* at most 96: a one-byte varint */
#ifdef __clang__
#pragma unroll
#endif
		for (i = 0; i < LAB_LOG_MAX_ARGS; i++) {
			if (i >= nargs)
				break;
			lab_put_u64(s, args[i]);
		}
	}
}

/* Opens a TestResult: its key, a length patched by lab_test_end(), the name, the status. */
static __always_inline void lab_test_begin(struct lab_test_state *s, const char *name,
					   __u32 name_len)
{
	s->test_status = TEST_PASS;
	s->test_open = 0;
	if (!lab_room(s, 1 + 2 + 1 + 2 + name_len + 2)) {
		s->dropped_tests++;
		return;
	}
	lab_put(s, LAB_KEY_RESULT);
	s->test_start = s->off;
	s->off += 2;
	lab_put(s, LAB_KEY_NAME);
	lab_put_len(s, name_len);
	LAB_MEMCPY(s->buf + s->off, name, name_len);
	s->off += name_len;
	lab_put(s, LAB_KEY_STATUS);
	s->status_at = s->off;
	lab_put(s, TEST_PASS);
	s->test_open = 1;
}

/* Closes the open TestResult: its final status and its length. */
static __always_inline void lab_test_end(struct lab_test_state *s)
{
	__u32 len;

	if (!s->test_open)
		return;
	s->buf[s->status_at] = s->test_status;
	len = s->off - s->test_start - 2;
	s->buf[s->test_start] = 0x80 | (len & 0x7f);
	s->buf[s->test_start + 1] = (len >> 7) & 0x7f;
	s->test_open = 0;
}

/* Writes the check's own verdict (a TestResult with an empty name), a note of what did not
 * fit, and an end mark; returns the verdict. Always fits: it writes into the reserve. */
static __always_inline int lab_finish(struct lab_test_state *s)
{
#define LAB_NOTE "lab: suite_result_map full: %u TEST blocks and %u logs not recorded"
	__u64 counts[2];

	_Static_assert(3 + 3 + sizeof(LAB_NOTE) + 2 + 16 + 8 + 1 <= LAB_FINISH_RESERVE,
		       "the finish reserve holds the overflow note, the verdict and the end mark");
	if (s->off > LAB_RESULT_SIZE - LAB_FINISH_RESERVE)
		return TEST_ERROR; /* cannot happen: every record checked lab_room() */
	if (s->dropped_tests || s->dropped_logs) {
		counts[0] = s->dropped_tests;
		counts[1] = s->dropped_logs;
		lab_put(s, LAB_KEY_SUITE_LOG);
		lab_put_len(s, 1 + 2 + (sizeof(LAB_NOTE) - 1) + 2 + 16);
		lab_put(s, LAB_KEY_FMT);
		lab_put_len(s, sizeof(LAB_NOTE) - 1);
		LAB_MEMCPY(s->buf + s->off, LAB_NOTE, sizeof(LAB_NOTE) - 1);
		s->off += sizeof(LAB_NOTE) - 1;
		lab_put(s, LAB_KEY_ARGS);
		lab_put(s, 16);
		lab_put_u64(s, counts[0]);
		lab_put_u64(s, counts[1]);
	}
	/* A TEST block that was not recorded may have failed: the verdict cannot be trusted. */
	if (s->dropped_tests)
		s->suite_status = TEST_ERROR;
	lab_put(s, LAB_KEY_RESULT);
	lab_put_len(s, 1 + 2 + 2);
	lab_put(s, LAB_KEY_NAME);
	lab_put_len(s, 0);
	lab_put(s, LAB_KEY_STATUS);
	lab_put(s, s->suite_status);
	lab_put(s, 0); /* the end: trailing zeros end the buffer */
	return s->suite_status;
#undef LAB_NOTE
}

/* ---- What suite authors use. ---- */

#define PKTGEN(progtype, name) LAB_SEC(progtype "/test/" name "/pktgen")
#define SETUP(progtype, name) LAB_SEC(progtype "/test/" name "/setup")
#define JUMP(progtype, name) SETUP(progtype, name) /* Kmesh's name for SETUP */
#define CHECK(progtype, name) LAB_SEC(progtype "/test/" name "/check")

/* Puts the next function in section progtype/tail/map/index, a tail call target: before the
 * stages run, the lab loads it (as a progtype program) and stores it at key `index` of the
 * prog array `map`, when the run's programs can reach that slot. `map` is the C name of a
 * BPF_MAP_TYPE_PROG_ARRAY map of the object (key and value __u32); `index` a decimal integer
 * constant, as a literal or a #define of one (not an enum, a suffix or an expression: the
 * lab refuses a section whose index is not decimal digits). */
#define TAIL_CALL(progtype, map, index)                                                    \
	LAB_SEC(progtype "/tail/" LAB_STRINGIFY(map) "/" LAB_STRINGIFY(index))

/* Opens the check: finds the result buffer (returns TEST_ERROR if it cannot). */
#define test_init()                                                                        \
	struct lab_test_state __lab = { 0 };                                               \
	const int __lab_in_test __attribute__((unused)) = 0;                               \
	{                                                                                  \
		__u32 __lab_key = 0;                                                       \
		__lab.buf = LAB_RESULT_LOOKUP(&__lab_key);                                 \
		if (!__lab.buf)                                                            \
			return TEST_ERROR;                                                 \
	}                                                                                  \
	__lab.suite_status = TEST_PASS

/* Closes the check: writes its verdict and returns it. The last statement of the program. */
#define test_finish()                                                                      \
	__lab_out: __attribute__((unused));                                                \
	return lab_finish(&__lab)

/* A named test inside the check; the body is a block of statements. test_*_now() and a
 * failed assert() leave the block; outside any TEST they jump to test_finish(). */
#define TEST(name, ...)                                                                    \
	do {                                                                               \
		__label__ __lab_out;                                                       \
		const int __lab_in_test __attribute__((unused)) = 1;                       \
		_Static_assert(sizeof("" name) <= LAB_STR_MAX, "TEST name too long");      \
		lab_test_begin(&__lab, "" name, sizeof("" name) - 1);                      \
		do __VA_ARGS__ while (0);                                                  \
	__lab_out: __attribute__((unused));                                                \
		lab_test_end(&__lab);                                                      \
	} while (0)

/* Logs a line, printf-style (%d %i %u %x %X %o %c %p %%, l/ll/h/hh/z, width, '-', '0'),
 * with up to LAB_LOG_MAX_ARGS integer arguments (cast pointers to unsigned long). */
#define test_log(fmt, ...)                                                                 \
	do {                                                                               \
		const __u64 __lab_args[] = { 0, ##__VA_ARGS__ };                           \
		_Static_assert(sizeof("" fmt) <= LAB_STR_MAX, "test_log format too long"); \
		_Static_assert(sizeof(__lab_args) / sizeof(__u64) - 1 <= LAB_LOG_MAX_ARGS,  \
			       "too many test_log arguments");                             \
		lab_log(&__lab, __lab_in_test, "" fmt, sizeof("" fmt) - 1, &__lab_args[1],  \
			sizeof(__lab_args) / sizeof(__u64) - 1);                           \
	} while (0)

/* Marks the TEST (or, outside one, the check) failed and goes on. */
#define test_fail() lab_set_status(&__lab, __lab_in_test, TEST_FAIL)
/* Marks it failed and leaves it. */
#define test_fail_now()                                                                    \
	do {                                                                               \
		test_fail();                                                               \
		goto __lab_out;                                                            \
	} while (0)
/* Marks it skipped (unless it failed already) and goes on. */
#define test_skip() lab_set_status(&__lab, __lab_in_test, TEST_SKIP)
/* Marks it skipped and leaves it. */
#define test_skip_now()                                                                    \
	do {                                                                               \
		test_skip();                                                               \
		goto __lab_out;                                                            \
	} while (0)
/* Logs and fails. */
#define test_error(fmt, ...)                                                               \
	do {                                                                               \
		test_log(fmt, ##__VA_ARGS__);                                              \
		test_fail();                                                               \
	} while (0)
/* Logs, fails and leaves. */
#define test_fatal(fmt, ...)                                                               \
	do {                                                                               \
		test_log(fmt, ##__VA_ARGS__);                                              \
		test_fail_now();                                                           \
	} while (0)

/* Fails and leaves unless cond holds, logging the expression and where it is. */
#undef assert
#define assert(cond)                                                                       \
	do {                                                                               \
		if (!(cond)) {                                                             \
			test_log("assert failed: " #cond " (" __FILE__                     \
				 ":" LAB_STRINGIFY(__LINE__) ")");                         \
			test_fail_now();                                                   \
		}                                                                          \
	} while (0)

#endif /* LAB_TEST_H */
