//! From a program's section name to the kernel's program type, expected attach type and load
//! flags, and how (or whether) `BPF_PROG_TEST_RUN` can run it — matched the way cilium/ebpf
//! does (`elf_sections.go`, generated from libbpf's `section_defs`, in libbpf's order):
//!
//! - a pattern ending in `/` matches when the name's first component is the pattern's and a
//!   `/` follows (`xdp/devmap/x`);
//! - a pattern ending in `+` matches when the name's first component is the pattern's (with
//!   or without more after a `/`);
//! - any other pattern matches by **prefix**: `xdp` matches `xdp/test/a/check` and Kmesh's
//!   `xdp_auth`, `tc` matches `tc/entry`, `cgroup/connect4` matches
//!   `cgroup/connect4/test/a/check`.
//!
//! libbpf 1.x matches plain patterns exactly, so it leaves such sections untyped; the objects
//! of Cilium's and Kmesh's test suites depend on cilium/ebpf's prefix rule, which lab follows.
//! A leading `?` (libbpf's "do not autoload") is ignored, as cilium/ebpf ignores it.

use aya_obj::generated::{bpf_attach_type as at, bpf_prog_type as pt, BPF_F_XDP_HAS_FRAGS};

/// How the kernel test-runs a program type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Packet in, packet out (`data_out` is the packet). `ctx`: a zeroed `__sk_buff` travels
    /// along (as Cilium passes to tc programs).
    Packet { ctx: bool },
    /// Packet in, `struct bpf_flow_keys` out; the packet itself does not change.
    FlowDissector,
    /// No packet: up to 12 zeroed u64 arguments as the context.
    RawTracepoint,
    /// The kernel has no test run for this type: the runner only loads it.
    LoadOnly,
}

/// What the runner needs to load and run a program of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgKind {
    /// The kernel's name for the type, for messages (`cgroup_sock_addr`).
    pub name: &'static str,
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub flags: u32,
    pub run: RunKind,
}

const fn kind(name: &'static str, prog_type: pt, attach: u32, run: RunKind) -> ProgKind {
    ProgKind {
        name,
        prog_type: prog_type as u32,
        expected_attach_type: attach,
        flags: 0,
        run,
    }
}

use RunKind::{FlowDissector, LoadOnly, Packet, RawTracepoint};

const XDP: ProgKind = kind("xdp", pt::BPF_PROG_TYPE_XDP, 0, Packet { ctx: false });
const XDP_FRAGS: ProgKind = ProgKind {
    flags: BPF_F_XDP_HAS_FRAGS,
    ..XDP
};
const SCHED_CLS: ProgKind = kind(
    "sched_cls",
    pt::BPF_PROG_TYPE_SCHED_CLS,
    0,
    Packet { ctx: true },
);

const fn sock_addr(attach: at) -> ProgKind {
    kind(
        "cgroup_sock_addr",
        pt::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        attach as u32,
        LoadOnly,
    )
}

const fn sock(attach: at) -> ProgKind {
    kind(
        "cgroup_sock",
        pt::BPF_PROG_TYPE_CGROUP_SOCK,
        attach as u32,
        LoadOnly,
    )
}

/// The sections lab knows, in libbpf's (and cilium/ebpf's) order.
const SECTIONS: &[(&str, ProgKind)] = &[
    (
        "socket",
        kind(
            "socket_filter",
            pt::BPF_PROG_TYPE_SOCKET_FILTER,
            0,
            Packet { ctx: false },
        ),
    ),
    (
        "kprobe+",
        kind("kprobe", pt::BPF_PROG_TYPE_KPROBE, 0, LoadOnly),
    ),
    (
        "kretprobe+",
        kind("kprobe", pt::BPF_PROG_TYPE_KPROBE, 0, LoadOnly),
    ),
    ("tc/ingress", SCHED_CLS),
    ("tc/egress", SCHED_CLS),
    ("tcx/ingress", SCHED_CLS),
    ("tcx/egress", SCHED_CLS),
    ("tc", SCHED_CLS),
    ("classifier", SCHED_CLS),
    (
        "action",
        kind(
            "sched_act",
            pt::BPF_PROG_TYPE_SCHED_ACT,
            0,
            Packet { ctx: true },
        ),
    ),
    (
        "tracepoint+",
        kind("tracepoint", pt::BPF_PROG_TYPE_TRACEPOINT, 0, LoadOnly),
    ),
    (
        "tp+",
        kind("tracepoint", pt::BPF_PROG_TYPE_TRACEPOINT, 0, LoadOnly),
    ),
    (
        "raw_tracepoint+",
        kind(
            "raw_tracepoint",
            pt::BPF_PROG_TYPE_RAW_TRACEPOINT,
            0,
            RawTracepoint,
        ),
    ),
    (
        "raw_tp+",
        kind(
            "raw_tracepoint",
            pt::BPF_PROG_TYPE_RAW_TRACEPOINT,
            0,
            RawTracepoint,
        ),
    ),
    ("xdp.frags/devmap", XDP_FRAGS),
    ("xdp/devmap", XDP),
    ("xdp.frags/cpumap", XDP_FRAGS),
    ("xdp/cpumap", XDP),
    ("xdp.frags", XDP_FRAGS),
    ("xdp", XDP),
    (
        "perf_event",
        kind("perf_event", pt::BPF_PROG_TYPE_PERF_EVENT, 0, LoadOnly),
    ),
    (
        "lwt_in",
        kind("lwt_in", pt::BPF_PROG_TYPE_LWT_IN, 0, Packet { ctx: false }),
    ),
    (
        "lwt_out",
        kind(
            "lwt_out",
            pt::BPF_PROG_TYPE_LWT_OUT,
            0,
            Packet { ctx: false },
        ),
    ),
    (
        "lwt_xmit",
        kind(
            "lwt_xmit",
            pt::BPF_PROG_TYPE_LWT_XMIT,
            0,
            Packet { ctx: false },
        ),
    ),
    (
        "sockops",
        kind(
            "sock_ops",
            pt::BPF_PROG_TYPE_SOCK_OPS,
            at::BPF_CGROUP_SOCK_OPS as u32,
            LoadOnly,
        ),
    ),
    (
        "sk_skb/stream_parser",
        kind(
            "sk_skb",
            pt::BPF_PROG_TYPE_SK_SKB,
            at::BPF_SK_SKB_STREAM_PARSER as u32,
            LoadOnly,
        ),
    ),
    (
        "sk_skb/stream_verdict",
        kind(
            "sk_skb",
            pt::BPF_PROG_TYPE_SK_SKB,
            at::BPF_SK_SKB_STREAM_VERDICT as u32,
            LoadOnly,
        ),
    ),
    (
        "sk_skb",
        kind("sk_skb", pt::BPF_PROG_TYPE_SK_SKB, 0, LoadOnly),
    ),
    (
        "sk_msg",
        kind(
            "sk_msg",
            pt::BPF_PROG_TYPE_SK_MSG,
            at::BPF_SK_MSG_VERDICT as u32,
            LoadOnly,
        ),
    ),
    (
        "flow_dissector",
        kind(
            "flow_dissector",
            pt::BPF_PROG_TYPE_FLOW_DISSECTOR,
            at::BPF_FLOW_DISSECTOR as u32,
            FlowDissector,
        ),
    ),
    (
        "cgroup_skb/ingress",
        kind(
            "cgroup_skb",
            pt::BPF_PROG_TYPE_CGROUP_SKB,
            at::BPF_CGROUP_INET_INGRESS as u32,
            Packet { ctx: false },
        ),
    ),
    (
        "cgroup_skb/egress",
        kind(
            "cgroup_skb",
            pt::BPF_PROG_TYPE_CGROUP_SKB,
            at::BPF_CGROUP_INET_EGRESS as u32,
            Packet { ctx: false },
        ),
    ),
    (
        "cgroup/skb",
        kind(
            "cgroup_skb",
            pt::BPF_PROG_TYPE_CGROUP_SKB,
            0,
            Packet { ctx: false },
        ),
    ),
    ("cgroup/sock_create", sock(at::BPF_CGROUP_INET_SOCK_CREATE)),
    (
        "cgroup/sock_release",
        sock(at::BPF_CGROUP_INET_SOCK_RELEASE),
    ),
    ("cgroup/sock", sock(at::BPF_CGROUP_INET_SOCK_CREATE)),
    ("cgroup/post_bind4", sock(at::BPF_CGROUP_INET4_POST_BIND)),
    ("cgroup/post_bind6", sock(at::BPF_CGROUP_INET6_POST_BIND)),
    ("cgroup/bind4", sock_addr(at::BPF_CGROUP_INET4_BIND)),
    ("cgroup/bind6", sock_addr(at::BPF_CGROUP_INET6_BIND)),
    ("cgroup/connect4", sock_addr(at::BPF_CGROUP_INET4_CONNECT)),
    ("cgroup/connect6", sock_addr(at::BPF_CGROUP_INET6_CONNECT)),
    ("cgroup/sendmsg4", sock_addr(at::BPF_CGROUP_UDP4_SENDMSG)),
    ("cgroup/sendmsg6", sock_addr(at::BPF_CGROUP_UDP6_SENDMSG)),
    ("cgroup/recvmsg4", sock_addr(at::BPF_CGROUP_UDP4_RECVMSG)),
    ("cgroup/recvmsg6", sock_addr(at::BPF_CGROUP_UDP6_RECVMSG)),
    (
        "cgroup/getpeername4",
        sock_addr(at::BPF_CGROUP_INET4_GETPEERNAME),
    ),
    (
        "cgroup/getpeername6",
        sock_addr(at::BPF_CGROUP_INET6_GETPEERNAME),
    ),
    (
        "cgroup/getsockname4",
        sock_addr(at::BPF_CGROUP_INET4_GETSOCKNAME),
    ),
    (
        "cgroup/getsockname6",
        sock_addr(at::BPF_CGROUP_INET6_GETSOCKNAME),
    ),
    (
        "cgroup/sysctl",
        kind(
            "cgroup_sysctl",
            pt::BPF_PROG_TYPE_CGROUP_SYSCTL,
            at::BPF_CGROUP_SYSCTL as u32,
            LoadOnly,
        ),
    ),
    (
        "cgroup/getsockopt",
        kind(
            "cgroup_sockopt",
            pt::BPF_PROG_TYPE_CGROUP_SOCKOPT,
            at::BPF_CGROUP_GETSOCKOPT as u32,
            LoadOnly,
        ),
    ),
    (
        "cgroup/setsockopt",
        kind(
            "cgroup_sockopt",
            pt::BPF_PROG_TYPE_CGROUP_SOCKOPT,
            at::BPF_CGROUP_SETSOCKOPT as u32,
            LoadOnly,
        ),
    ),
    (
        "cgroup/dev",
        kind(
            "cgroup_device",
            pt::BPF_PROG_TYPE_CGROUP_DEVICE,
            at::BPF_CGROUP_DEVICE as u32,
            LoadOnly,
        ),
    ),
];

/// Whether section `name` matches `pattern` by cilium/ebpf's rules (see the module docs).
fn matches(name: &str, pattern: &str) -> bool {
    let (have, found_slash) = match name.split_once('/') {
        Some((first, _)) => (first, true),
        None => (name, false),
    };
    let want = pattern.trim_end_matches(['+', '/']);
    if pattern.ends_with('/') {
        have == want && found_slash
    } else if pattern.ends_with('+') {
        have == want
    } else {
        name.starts_with(pattern)
    }
}

/// The kind of the program in section `name`; None for sections lab cannot type (iproute2's
/// `<id>/<slot>` tail calls take the type of the object's other programs).
pub fn section_kind(name: &str) -> Option<ProgKind> {
    let name = name.strip_prefix('?').unwrap_or(name);
    SECTIONS
        .iter()
        .find(|(pattern, _)| matches(name, pattern))
        .map(|(_, k)| *k)
}

/// The kind of a test's `<progtype>` (the part of its section name before `/test/`): the
/// same rules, applied to the whole section name.
pub fn prog_kind(progtype: &str) -> Option<ProgKind> {
    section_kind(&format!("{progtype}/test"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_typed_as_cilium_ebpf_types_them() {
        let table: &[(&str, Option<(&str, RunKind)>)] = &[
            ("xdp/test/a/check", Some(("xdp", Packet { ctx: false }))),
            ("xdp", Some(("xdp", Packet { ctx: false }))),
            // Kmesh's sections, by prefix.
            ("xdp_auth", Some(("xdp", Packet { ctx: false }))),
            ("tc/entry", Some(("sched_cls", Packet { ctx: true }))),
            ("tc/test/x/setup", Some(("sched_cls", Packet { ctx: true }))),
            ("tc/ingress", Some(("sched_cls", Packet { ctx: true }))),
            ("classifier/x", Some(("sched_cls", Packet { ctx: true }))),
            ("socket1", Some(("socket_filter", Packet { ctx: false }))),
            (
                "cgroup_skb/egress/test/a/check",
                Some(("cgroup_skb", Packet { ctx: false })),
            ),
            ("flow_dissector", Some(("flow_dissector", FlowDissector))),
            ("raw_tp/sys_enter", Some(("raw_tracepoint", RawTracepoint))),
            // `+` patterns want the first component exactly.
            ("raw_tpx", None),
            (
                "cgroup/connect4/test/c/check",
                Some(("cgroup_sock_addr", LoadOnly)),
            ),
            ("cgroup/sendmsg4", Some(("cgroup_sock_addr", LoadOnly))),
            ("sockops", Some(("sock_ops", LoadOnly))),
            ("sk_msg/test/r/check", Some(("sk_msg", LoadOnly))),
            ("?xdp", Some(("xdp", Packet { ctx: false }))),
            // iproute2 tail sections and unknowns have no type of their own.
            ("2/1", None),
            ("cgroup/bogus", None),
            ("fentry/foo", None),
            ("", None),
        ];
        for (name, want) in table {
            let got = section_kind(name).map(|k| (k.name, k.run));
            assert_eq!(got, *want, "{name}");
        }
        assert_eq!(
            section_kind("xdp.frags/x").map(|k| k.flags),
            Some(BPF_F_XDP_HAS_FRAGS)
        );
        assert_eq!(
            section_kind("cgroup_skb/egress").map(|k| k.expected_attach_type),
            Some(at::BPF_CGROUP_INET_EGRESS as u32)
        );
        assert_eq!(prog_kind("tc").map(|k| k.name), Some("sched_cls"));
        assert_eq!(
            prog_kind("cgroup/connect4").map(|k| k.name),
            Some("cgroup_sock_addr")
        );
    }
}
