//! End-to-end tests of the guest's eBPF runner (`/init bpf list|run`): small test objects
//! compiled here with clang (`tests/bpf/*.c`), sent into real guests with `lab boot --put`,
//! and the runner's JSON checked field by field: passing and failing XDP tests (pktgen, setup,
//! check), a tc test, a cgroup/connect4 test (skipped), a check that never writes its result,
//! an object without `suite_result_map`, a program the verifier rejects, and tail calls by the
//! lab's `<progtype>/tail/<map>/<index>` alias (`tests/bpf/tail.c`: a filled slot taken, an
//! empty one falling through, a rejected target that no test reaches left unloaded, and a
//! rejected target, a missing map and a map that is not a prog array, each an error for the
//! test that reaches them).
//!
//! They need QEMU and clang (Debian's `clang` and `libbpf-dev`). Without them they skip and say
//! so; with `LAB_E2E=1` (CI) a missing prerequisite is a failure instead.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

use common::*;

/// The value size of `suite_result_map` in `tests/bpf/result.h`.
const RESULT_SIZE: usize = 8192;
/// The tests of `tests/bpf/suite.c`, in the order the runner lists them.
const SUITE_TESTS: [&str; 6] = [
    "xdp_pass", "xdp_fail", "tc_pass", "connect4", "no_write", "rejected",
];

/// The tests of `tests/bpf/tail.c`.
const TAIL_TESTS: [&str; 2] = ["tail_taken", "tail_empty"];
/// `tests/bpf/tail.c` built with each define, and how the runner's reason for every test of
/// that object begins.
const TAIL_ERRORS: [(&str, &str); 3] = [
    (
        "BAD_TARGET",
        "verifier rejected tail call target target (xdp/tail/jumps/1, for jumps[1]): ",
    ),
    (
        "NO_MAP",
        "section xdp/tail/nosuch/1 fills nosuch[1], and the object has no map named nosuch",
    ),
    (
        "NOT_PROG_ARRAY",
        "section xdp/tail/plain/1 fills plain[1], which is no prog array",
    ),
];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Compiles `tests/bpf/NAME.c` into `dir`; None (having said why) without clang or libbpf's
/// headers.
fn compile(name: &str, dir: &Path) -> Option<PathBuf> {
    compile_with(name, None, dir)
}

/// The same with `-D<define>` where given, into `NAME.o` or `NAME-<define>.o`.
fn compile_with(name: &str, define: Option<&str>, dir: &Path) -> Option<PathBuf> {
    for (ok, what) in [
        (
            on_path("clang"),
            "clang is not installed (apt-get install clang)",
        ),
        (
            Path::new("/usr/include/bpf/bpf_helpers.h").is_file(),
            "libbpf's headers are not installed (apt-get install libbpf-dev)",
        ),
    ] {
        if !ok {
            assert!(!required(), "LAB_E2E=1 but {what}");
            eprintln!("SKIPPED: {what}");
            return None;
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/bpf/{name}.c"));
    let obj = match define {
        Some(d) => dir.join(format!("{name}-{d}.o")),
        None => dir.join(format!("{name}.o")),
    };
    let out = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86"])
        .args(define.map(|d| format!("-D{d}")))
        // Debian keeps <asm/types.h> under the multiarch directory.
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clang failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(obj)
}

/// `SuiteResult { results { name, status } }` as written by `LAB_RESULT`, zero-padded.
fn result_bytes(name: &str, status: u8) -> Vec<u8> {
    let mut v = vec![0x0a, name.len() as u8 + 4, 0x0a, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&[0x10, status]);
    v.resize(RESULT_SIZE, 0);
    v
}

/// The same with one test log `{ fmt, args: [a, b] }`, as written by `LAB_FAIL_LOG`.
fn fail_bytes(name: &str, fmt: &str, a: u64, b: u64) -> Vec<u8> {
    let log_len = 2 + fmt.len() + 18;
    let mut v = vec![
        0x0a,
        (2 + name.len() + 2 + 2 + log_len) as u8,
        0x0a,
        name.len() as u8,
    ];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&[0x10, 2, 0x1a, log_len as u8, 0x0a, fmt.len() as u8]);
    v.extend_from_slice(fmt.as_bytes());
    v.push(0x11);
    v.extend_from_slice(&a.to_le_bytes());
    v.push(0x11);
    v.extend_from_slice(&b.to_le_bytes());
    v.resize(RESULT_SIZE, 0);
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stage names of a report, in order.
fn stages(report: &Value) -> Vec<(String, String)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["retval"].is_u64() && s["duration_ns"].is_u64(), "{s}");
            (
                s["stage"].as_str().unwrap().to_string(),
                s["section"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn runner_on(kernel: &str) {
    let objs = tempfile::tempdir().unwrap();
    let (Some(suite), Some(nomap)) = (compile("suite", objs.path()), compile("nomap", objs.path()))
    else {
        return;
    };
    let mut tails = vec![compile("tail", objs.path()).unwrap()];
    for (define, _) in TAIL_ERRORS {
        tails.push(compile_with("tail", Some(define), objs.path()).unwrap());
    }
    // One guest runs everything: the listing, each test, and the error cases, each answer on
    // its own line(s) after a marker.
    let mut script = String::from("echo @list; /init bpf list /t.o; echo @rc=$?; ");
    for t in SUITE_TESTS {
        script.push_str(&format!("echo @{t}; /init bpf run /t.o {t}; "));
    }
    script.push_str("echo @tail_list; /init bpf list /tail.o; ");
    for t in TAIL_TESTS {
        script.push_str(&format!("echo @{t}; /init bpf run /tail.o {t}; "));
    }
    for (define, _) in TAIL_ERRORS {
        script.push_str(&format!(
            "echo @{define}; /init bpf run /{define}.o tail_taken; "
        ));
    }
    // A bad target that no program of the run reaches is never loaded (cilium/ebpf's pruning).
    script.push_str("echo @pruned; /init bpf run /BAD_TARGET.o tail_empty; ");
    script.push_str(
        "echo @nomap; /init bpf run /n.o nomap; \
         echo @missing; /init bpf run /t.o missing; \
         echo @bad; /init bpf list /init; echo @rc=$?",
    );
    let s = Scratch::new();
    let mut args: Vec<String> = ["boot", "-k", kernel, "--put"].map(String::from).to_vec();
    args.push(format!("{}:/t.o", suite.display()));
    args.push("--put".into());
    args.push(format!("{}:/n.o", nomap.display()));
    args.push("--put".into());
    args.push(format!("{}:/tail.o", tails[0].display()));
    for ((define, _), obj) in TAIL_ERRORS.iter().zip(&tails[1..]) {
        args.push("--put".into());
        args.push(format!("{}:/{define}.o", obj.display()));
    }
    args.extend(["--", "sh", "-c", &script].map(String::from));
    let out = s.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let mut sections: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(marker) = line.strip_prefix('@') {
            current = marker.to_string();
            continue;
        }
        sections
            .entry(current.clone())
            .or_default()
            .push(line.to_string());
    }
    let report_as = |marker: &str, name: &str| -> Value {
        let lines = &sections[marker];
        assert_eq!(lines.len(), 1, "{marker}: one JSON line, got {lines:?}");
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["test"], name, "{v}");
        v
    };
    let report = |name: &str| report_as(name, name);

    assert_eq!(sections["list"], SUITE_TESTS);
    assert!(text.contains("@rc=0\n"), "list exits 0");

    let pass = report("xdp_pass");
    assert_eq!(pass["outcome"], "ran", "{pass}");
    assert_eq!(
        stages(&pass),
        [
            ("pktgen".into(), "xdp/test/xdp_pass/pktgen".into()),
            ("setup".into(), "xdp/test/xdp_pass/setup".into()),
            ("check".into(), "xdp/test/xdp_pass/check".into()),
        ]
    );
    assert_eq!(pass["stages"][1]["retval"], 3, "setup returns XDP_TX");
    assert_eq!(pass["result_map"], hex(&result_bytes("xdp_pass", 1)));

    let fail = report("xdp_fail");
    assert_eq!(fail["outcome"], "ran", "{fail}");
    assert_eq!(stages(&fail).len(), 1);
    assert_eq!(
        fail["result_map"],
        hex(&fail_bytes("xdp_fail", "expected %d, got %d", 1, 2))
    );

    let tc = report("tc_pass");
    assert_eq!(tc["outcome"], "ran", "{tc}");
    assert_eq!(
        stages(&tc),
        [
            ("pktgen".into(), "tc/test/tc_pass/pktgen".into()),
            ("check".into(), "tc/test/tc_pass/check".into()),
        ]
    );
    assert_eq!(tc["result_map"], hex(&result_bytes("tc_pass", 1)));

    let connect4 = report("connect4");
    assert_eq!(connect4["outcome"], "skipped", "{connect4}");
    assert!(
        connect4["reason"]
            .as_str()
            .unwrap()
            .contains("cannot test-run cgroup_sock_addr"),
        "{connect4}"
    );
    assert!(stages(&connect4).is_empty());

    let silent = report("no_write");
    assert_eq!(silent["outcome"], "ran", "{silent}");
    assert_eq!(silent["result_map"], "0".repeat(2 * RESULT_SIZE));

    let rejected = report("rejected");
    assert_eq!(rejected["outcome"], "error", "{rejected}");
    assert!(
        rejected["reason"]
            .as_str()
            .unwrap()
            .starts_with("check (xdp/test/rejected/check): verifier rejected rejected_check"),
        "{rejected}"
    );
    let log = rejected["verifier_log"].as_str().unwrap();
    assert!(log.contains("invalid access to packet"), "{log}");
    assert!(log.len() <= 8 * 1024 + 4);

    assert_eq!(
        sections["tail_list"], TAIL_TESTS,
        "tail call targets are no tests"
    );
    let taken = report("tail_taken");
    assert_eq!(taken["outcome"], "ran", "{taken}");
    assert_eq!(
        taken["stages"][0]["retval"], 3,
        "the setup's tail call ran the target, which returns XDP_TX: {taken}"
    );
    assert_eq!(taken["result_map"], hex(&result_bytes("tail_taken", 1)));
    let empty = report("tail_empty");
    assert_eq!(empty["outcome"], "ran", "{empty}");
    assert_eq!(
        empty["stages"][0]["retval"], 1,
        "the empty slot fell through to XDP_DROP: {empty}"
    );
    assert_eq!(empty["result_map"], hex(&result_bytes("tail_empty", 1)));
    let pruned = report_as("pruned", "tail_empty");
    assert_eq!(pruned["outcome"], "ran", "{pruned}");
    assert_eq!(pruned["result_map"], hex(&result_bytes("tail_empty", 1)));
    for (define, why) in TAIL_ERRORS {
        let e = report_as(define, "tail_taken");
        assert_eq!(e["outcome"], "error", "{define}: {e}");
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.starts_with(why), "{define}: {reason}");
        assert!(stages(&e).is_empty(), "{define}: nothing ran: {e}");
        if define == "BAD_TARGET" {
            let log = e["verifier_log"].as_str().unwrap();
            assert!(log.contains("invalid access to packet"), "{log}");
        } else {
            assert!(e["verifier_log"].is_null(), "{e}");
        }
    }

    let nomap = report("nomap");
    assert_eq!(nomap["outcome"], "ran", "{nomap}");
    assert!(nomap["result_map"].is_null());

    let missing = report("missing");
    assert_eq!(missing["outcome"], "error");
    assert!(missing["reason"]
        .as_str()
        .unwrap()
        .contains("no test named missing"));

    assert!(
        sections.get("bad").is_none_or(Vec::is_empty) && text.ends_with("@rc=2\n"),
        "listing a non-object exits 2 and prints nothing"
    );
    assert!(
        stderr(&out).contains("invalid object"),
        "the reason is on stderr"
    );
}

#[test]
fn the_bpf_runner_on_debian_6_1() {
    if can_boot() {
        runner_on("debian-6.1");
    }
}

#[test]
fn the_bpf_runner_on_debian_6_12() {
    if can_boot() {
        runner_on("debian-6.12");
    }
}

#[test]
fn the_bpf_runner_on_the_lab_config_kernel() {
    if can_boot() && installed("lab-6.1") {
        runner_on("lab-6.1");
    }
}
