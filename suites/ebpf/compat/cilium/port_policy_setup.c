// SPDX-License-Identifier: Apache-2.0
/*
 * The maps setup of port_policy_test.c, as a Go harness's user-space step would be: opens the
 * object's map port_policy where the runner pinned it ($LAB_BPF_MAPS/port_policy) and denies
 * UDP port 53. Built by lab like a test program in C (cc, -lbpf) and run in the guest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <linux/types.h>
#include <bpf/bpf.h>

int main(void)
{
	const char *dir = getenv("LAB_BPF_MAPS");
	char path[4096];
	__u16 port = 53;
	__u32 deny = 1;
	int fd;

	if (!dir) {
		fprintf(stderr, "LAB_BPF_MAPS is not set\n");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/port_policy", dir);
	fd = bpf_obj_get(path);
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	if (bpf_map_update_elem(fd, &port, &deny, BPF_ANY)) {
		fprintf(stderr, "update %s: %s\n", path, strerror(errno));
		return 1;
	}
	return 0;
}
