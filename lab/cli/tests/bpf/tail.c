/* Tail calls for the guest runner's e2e test: the target in section xdp/tail/jumps/1 fills
 * slot 1 of the prog array jumps (the lab's alias of a static slot); slot 2 stays empty.
 * tail_taken's setup jumps to slot 1, tail_empty's to slot 2, which falls through. Built again
 * with -DBAD_TARGET (a target the verifier rejects: an error for tail_taken, which reaches it,
 * and never loaded for tail_empty), -DNO_MAP (a target naming no map) and -DNOT_PROG_ARRAY (a
 * target naming an array map), where every test is an error. */
#include "result.h"

#define MARK 0x7a

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 4);
} jumps SEC(".maps");

#if defined(NOT_PROG_ARRAY)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 4);
} plain SEC(".maps");
#define TARGET "xdp/tail/plain/1"
#elif defined(NO_MAP)
#define TARGET "xdp/tail/nosuch/1"
#else
#define TARGET "xdp/tail/jumps/1"
#endif

SEC(TARGET)
int target(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
#ifdef BAD_TARGET
	/* No bounds check. */
	return data[0];
#else
	if ((void *)(data + 1) > (void *)(long)ctx->data_end)
		return XDP_ABORTED;
	data[0] = MARK;
	return XDP_TX;
#endif
}

SEC("xdp/test/tail_taken/setup")
int tail_taken_setup(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jumps, 1);
	return XDP_DROP;
}

/* Passes if the target ran: XDP_TX and the packet marked. */
SEC("xdp/test/tail_taken/check")
int tail_taken_check(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	if ((void *)(data + 5) > (void *)(long)ctx->data_end)
		return XDP_PASS;
	__u32 rc = *(__u32 *)data;
	if (rc != XDP_TX || data[4] != MARK) {
		LAB_FAIL_LOG("tail_taken", "retval %llu mark %llu", rc, data[4]);
		return XDP_PASS;
	}
	LAB_RESULT("tail_taken", LAB_PASS);
	return XDP_PASS;
}

SEC("xdp/test/tail_empty/setup")
int tail_empty_setup(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jumps, 2);
	return XDP_DROP;
}

/* Passes if the tail call fell through: XDP_DROP and the packet untouched. */
SEC("xdp/test/tail_empty/check")
int tail_empty_check(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	if ((void *)(data + 5) > (void *)(long)ctx->data_end)
		return XDP_PASS;
	__u32 rc = *(__u32 *)data;
	if (rc != XDP_DROP || data[4] != 0) {
		LAB_FAIL_LOG("tail_empty", "retval %llu mark %llu", rc, data[4]);
		return XDP_PASS;
	}
	LAB_RESULT("tail_empty", LAB_PASS);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
