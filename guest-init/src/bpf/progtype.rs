//! From a section's `<progtype>` to the kernel's program type, expected attach type and load
//! flags, and how (or whether) `BPF_PROG_TEST_RUN` can run it.

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

/// What the runner needs to load and run a program of one `<progtype>`.
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

/// The kind of `<progtype>` (the part of a section name before `/test/`); None for types the
/// runner does not know how to load.
pub fn prog_kind(progtype: &str) -> Option<ProgKind> {
    use RunKind::{LoadOnly, Packet};
    let (head, tail) = progtype.split_once('/').unwrap_or((progtype, ""));
    let sock_addr = |a: at| {
        Some(kind(
            "cgroup_sock_addr",
            pt::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            a as u32,
            LoadOnly,
        ))
    };
    let sock = |a: at| {
        Some(kind(
            "cgroup_sock",
            pt::BPF_PROG_TYPE_CGROUP_SOCK,
            a as u32,
            LoadOnly,
        ))
    };
    match (head, tail) {
        ("xdp", _) => Some(kind("xdp", pt::BPF_PROG_TYPE_XDP, 0, Packet { ctx: false })),
        ("xdp.frags", _) => Some(ProgKind {
            flags: BPF_F_XDP_HAS_FRAGS,
            ..kind("xdp", pt::BPF_PROG_TYPE_XDP, 0, Packet { ctx: false })
        }),
        ("tc" | "tcx" | "classifier", _) => Some(kind(
            "sched_cls",
            pt::BPF_PROG_TYPE_SCHED_CLS,
            0,
            Packet { ctx: true },
        )),
        ("action", _) => Some(kind(
            "sched_act",
            pt::BPF_PROG_TYPE_SCHED_ACT,
            0,
            Packet { ctx: true },
        )),
        ("socket", _) => Some(kind(
            "socket_filter",
            pt::BPF_PROG_TYPE_SOCKET_FILTER,
            0,
            Packet { ctx: false },
        )),
        ("cgroup_skb", "ingress") | ("cgroup", "skb") => Some(kind(
            "cgroup_skb",
            pt::BPF_PROG_TYPE_CGROUP_SKB,
            at::BPF_CGROUP_INET_INGRESS as u32,
            Packet { ctx: false },
        )),
        ("cgroup_skb", "egress") => Some(kind(
            "cgroup_skb",
            pt::BPF_PROG_TYPE_CGROUP_SKB,
            at::BPF_CGROUP_INET_EGRESS as u32,
            Packet { ctx: false },
        )),
        ("flow_dissector", _) => Some(kind(
            "flow_dissector",
            pt::BPF_PROG_TYPE_FLOW_DISSECTOR,
            at::BPF_FLOW_DISSECTOR as u32,
            RunKind::FlowDissector,
        )),
        ("raw_tp" | "raw_tracepoint", _) => Some(kind(
            "raw_tracepoint",
            pt::BPF_PROG_TYPE_RAW_TRACEPOINT,
            0,
            RunKind::RawTracepoint,
        )),
        ("lwt_in", _) => Some(kind(
            "lwt_in",
            pt::BPF_PROG_TYPE_LWT_IN,
            0,
            Packet { ctx: false },
        )),
        ("lwt_out", _) => Some(kind(
            "lwt_out",
            pt::BPF_PROG_TYPE_LWT_OUT,
            0,
            Packet { ctx: false },
        )),
        ("lwt_xmit", _) => Some(kind(
            "lwt_xmit",
            pt::BPF_PROG_TYPE_LWT_XMIT,
            0,
            Packet { ctx: false },
        )),
        ("cgroup", "bind4") => sock_addr(at::BPF_CGROUP_INET4_BIND),
        ("cgroup", "bind6") => sock_addr(at::BPF_CGROUP_INET6_BIND),
        ("cgroup", "connect4") => sock_addr(at::BPF_CGROUP_INET4_CONNECT),
        ("cgroup", "connect6") => sock_addr(at::BPF_CGROUP_INET6_CONNECT),
        ("cgroup", "sendmsg4") => sock_addr(at::BPF_CGROUP_UDP4_SENDMSG),
        ("cgroup", "sendmsg6") => sock_addr(at::BPF_CGROUP_UDP6_SENDMSG),
        ("cgroup", "recvmsg4") => sock_addr(at::BPF_CGROUP_UDP4_RECVMSG),
        ("cgroup", "recvmsg6") => sock_addr(at::BPF_CGROUP_UDP6_RECVMSG),
        ("cgroup", "getpeername4") => sock_addr(at::BPF_CGROUP_INET4_GETPEERNAME),
        ("cgroup", "getpeername6") => sock_addr(at::BPF_CGROUP_INET6_GETPEERNAME),
        ("cgroup", "getsockname4") => sock_addr(at::BPF_CGROUP_INET4_GETSOCKNAME),
        ("cgroup", "getsockname6") => sock_addr(at::BPF_CGROUP_INET6_GETSOCKNAME),
        ("cgroup", "sock" | "sock_create") => sock(at::BPF_CGROUP_INET_SOCK_CREATE),
        ("cgroup", "sock_release") => sock(at::BPF_CGROUP_INET_SOCK_RELEASE),
        ("cgroup", "post_bind4") => sock(at::BPF_CGROUP_INET4_POST_BIND),
        ("cgroup", "post_bind6") => sock(at::BPF_CGROUP_INET6_POST_BIND),
        ("cgroup", "getsockopt") => Some(kind(
            "cgroup_sockopt",
            pt::BPF_PROG_TYPE_CGROUP_SOCKOPT,
            at::BPF_CGROUP_GETSOCKOPT as u32,
            LoadOnly,
        )),
        ("cgroup", "setsockopt") => Some(kind(
            "cgroup_sockopt",
            pt::BPF_PROG_TYPE_CGROUP_SOCKOPT,
            at::BPF_CGROUP_SETSOCKOPT as u32,
            LoadOnly,
        )),
        ("cgroup", "sysctl") => Some(kind(
            "cgroup_sysctl",
            pt::BPF_PROG_TYPE_CGROUP_SYSCTL,
            at::BPF_CGROUP_SYSCTL as u32,
            LoadOnly,
        )),
        ("cgroup", "dev") => Some(kind(
            "cgroup_device",
            pt::BPF_PROG_TYPE_CGROUP_DEVICE,
            at::BPF_CGROUP_DEVICE as u32,
            LoadOnly,
        )),
        ("sockops", _) => Some(kind(
            "sock_ops",
            pt::BPF_PROG_TYPE_SOCK_OPS,
            at::BPF_CGROUP_SOCK_OPS as u32,
            LoadOnly,
        )),
        ("sk_msg", _) => Some(kind(
            "sk_msg",
            pt::BPF_PROG_TYPE_SK_MSG,
            at::BPF_SK_MSG_VERDICT as u32,
            LoadOnly,
        )),
        ("sk_skb", "stream_parser") => Some(kind(
            "sk_skb",
            pt::BPF_PROG_TYPE_SK_SKB,
            at::BPF_SK_SKB_STREAM_PARSER as u32,
            LoadOnly,
        )),
        ("sk_skb", _) => Some(kind(
            "sk_skb",
            pt::BPF_PROG_TYPE_SK_SKB,
            at::BPF_SK_SKB_STREAM_VERDICT as u32,
            LoadOnly,
        )),
        ("kprobe" | "kretprobe", _) => Some(kind("kprobe", pt::BPF_PROG_TYPE_KPROBE, 0, LoadOnly)),
        ("tracepoint" | "tp", _) => Some(kind(
            "tracepoint",
            pt::BPF_PROG_TYPE_TRACEPOINT,
            0,
            LoadOnly,
        )),
        ("perf_event", _) => Some(kind(
            "perf_event",
            pt::BPF_PROG_TYPE_PERF_EVENT,
            0,
            LoadOnly,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progtypes_map_to_kernel_types() {
        let table: &[(&str, Option<(&str, RunKind)>)] = &[
            ("xdp", Some(("xdp", RunKind::Packet { ctx: false }))),
            ("tc", Some(("sched_cls", RunKind::Packet { ctx: true }))),
            (
                "classifier",
                Some(("sched_cls", RunKind::Packet { ctx: true })),
            ),
            (
                "tc/ingress",
                Some(("sched_cls", RunKind::Packet { ctx: true })),
            ),
            (
                "socket",
                Some(("socket_filter", RunKind::Packet { ctx: false })),
            ),
            (
                "cgroup_skb/egress",
                Some(("cgroup_skb", RunKind::Packet { ctx: false })),
            ),
            (
                "flow_dissector",
                Some(("flow_dissector", RunKind::FlowDissector)),
            ),
            (
                "raw_tp/sys_enter",
                Some(("raw_tracepoint", RunKind::RawTracepoint)),
            ),
            (
                "cgroup/connect4",
                Some(("cgroup_sock_addr", RunKind::LoadOnly)),
            ),
            (
                "cgroup/sendmsg4",
                Some(("cgroup_sock_addr", RunKind::LoadOnly)),
            ),
            ("sockops", Some(("sock_ops", RunKind::LoadOnly))),
            ("cgroup/bogus", None),
            ("fentry/foo", None),
            ("", None),
        ];
        for (progtype, want) in table {
            let got = prog_kind(progtype).map(|k| (k.name, k.run));
            assert_eq!(got, *want, "{progtype}");
        }
        assert_eq!(
            prog_kind("xdp.frags").map(|k| k.flags),
            Some(BPF_F_XDP_HAS_FRAGS)
        );
        assert_eq!(
            prog_kind("cgroup_skb/egress").map(|k| k.expected_attach_type),
            Some(at::BPF_CGROUP_INET_EGRESS as u32)
        );
    }
}
