/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libbpf's view of an eBPF object, for guest-init's loader to be checked against: opens the
 * object as bpf_object__open_file() does (no kernel needed) and prints its maps and programs,
 * one a line:
 *   map NAME TYPE KEY_SIZE VALUE_SIZE MAX_ENTRIES FLAGS
 *   prog NAME SECTION TYPE
 * Exit 3: libbpf refuses the object (its error on stderr).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <bpf/libbpf.h>

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_map *map;
	struct bpf_program *prog;
	long err;

	if (argc != 2) {
		fprintf(stderr, "usage: view OBJECT\n");
		return 2;
	}
	obj = bpf_object__open_file(argv[1], NULL);
	err = libbpf_get_error(obj);
	if (!obj || err) {
		fprintf(stderr, "libbpf cannot open %s: %s\n", argv[1], strerror(-err));
		return 3;
	}
	bpf_object__for_each_map(map, obj)
		printf("map %s %d %u %u %u %u\n", bpf_map__name(map), bpf_map__type(map),
		       bpf_map__key_size(map), bpf_map__value_size(map),
		       bpf_map__max_entries(map), bpf_map__map_flags(map));
	bpf_object__for_each_program(prog, obj)
		printf("prog %s %s %d\n", bpf_program__name(prog), bpf_program__section_name(prog),
		       bpf_program__type(prog));
	bpf_object__close(obj);
	return 0;
}
