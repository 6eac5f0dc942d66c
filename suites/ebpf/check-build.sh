#!/bin/sh
# Compiles every test object of the eBPF suites as lab does (clang -O2 -g -target bpf), into a
# scratch directory, so a broken suite shows without a VM. Usage: check-build.sh [OUTDIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
status=0
# Debian keeps asm/types.h (which linux/types.h includes) under the multiarch directory, which
# clang -target bpf does not search by itself.
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
for src in "$here"/tests/*.c "$here"/selftest/tests/*.c; do
	[ -e "$src" ] || continue
	rel=${src#"$here"/}
	obj="$out/$(echo "$rel" | tr / _ | sed 's/\.c$/.o/')"
	if clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -Wall -Werror \
		-I "/usr/include/$multiarch" \
		-I "$(dirname "$src")/include" -I "$here/include" -c "$src" -o "$obj"; then
		echo "ok   $rel"
	else
		echo "FAIL $rel"
		status=1
	fi
done
# compat/: Cilium's and Kmesh's flags and their headers, as compat/Kyuafile gives them.
for src in "$here"/compat/cilium/*_test.c "$here"/compat/kmesh/*_test.c; do
	[ -e "$src" ] || continue
	rel=${src#"$here"/}
	obj="$out/$(echo "$rel" | tr / _ | sed 's/\.c$/.o/')"
	if clang -O2 -g --target=bpf -mcpu=v3 -nostdinc -Werror -Wall -Wno-unused-function \
		-I "$here/compat/include" -c "$src" -o "$obj"; then
		echo "ok   $rel"
	else
		echo "FAIL $rel"
		status=1
	fi
done
echo "objects in $out"
exit $status
