/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Load-time configuration in section .rodata.config, both ways Cilium has written it:
 *
 * - CONFIG(name): one ld_imm64 of the variable itself, through inline asm, which Cilium's
 *   loader turns into an immediate load of the variable's value ("inline global data");
 *   loaded as a map-value address instead, the program would compute with an address.
 * - CONFIG_VAR(name): an ordinary read of a volatile const, which loaders leave as a load from
 *   the frozen map, whose value the verifier then knows.
 *
 * ASSIGN_CONFIG(type, name, value) declares one with its value; a loader may override it.
 */
#ifndef COMPAT_BPF_CONFIG_H
#define COMPAT_BPF_CONFIG_H

#define __CONFIG_SECTION ".rodata.config"

#define DECLARE_CONFIG(type, name) __section(__CONFIG_SECTION) volatile const type __config_##name;
#define ASSIGN_CONFIG(type, name, value)                                         \
	__section(__CONFIG_SECTION) volatile const type __config_##name = value;

#define CONFIG(name)                                                             \
	({                                                                       \
		__u64 __out;                                                     \
		asm volatile("%[out] = __config_" #name " ll" : [out] "=r"(__out)); \
		(__typeof__(__config_##name))__out;                              \
	})

#define CONFIG_VAR(name) (__config_##name)

#endif
