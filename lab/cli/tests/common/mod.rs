//! Helpers shared by the end-to-end tests: prerequisites (QEMU, installed kernels) that skip
//! loudly or, with `LAB_E2E=1` (CI), fail; a private TMPDIR per test checked for leftovers.
#![allow(dead_code, reason = "each test binary uses a different part")]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lab_engine::lab::Lab;
use lab_engine::qemu::{QemuBackend, VsockBackend};
use lab_kernel::cache::Cache;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// Whether prerequisites must be there (CI).
pub fn required() -> bool {
    std::env::var("LAB_E2E").is_ok_and(|v| v == "1")
}

/// Returns false (and says why) when VM tests cannot run here.
pub fn can_boot() -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()))
        .unwrap_or(false);
    if !found {
        assert!(
            !required(),
            "LAB_E2E=1 but qemu-system-x86_64 is not installed"
        );
        eprintln!("SKIPPED: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)");
    }
    found
}

/// Whether the catalog kernel `name` is installed; built kernels take minutes, so tests never
/// build them implicitly.
pub fn installed(name: &str) -> bool {
    let out = Command::new(LAB)
        .args(["kernel", "list", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = text
        .lines()
        .any(|l| l.contains(&format!("\"name\":\"{name}\"")));
    if !ok {
        assert!(
            !required(),
            "LAB_E2E=1 but kernel {name} is not installed (lab kernel build {name})"
        );
        eprintln!(
            "SKIPPED: kernel {name} not installed; run `lab kernel build {name}` or scripts/test"
        );
    }
    ok
}

/// The release recorded for an installed kernel.
pub fn release_of(name: &str) -> String {
    let out = Command::new(LAB)
        .args(["kernel", "list", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("\"name\":\"{name}\"")))
        .unwrap_or_else(|| panic!("{name} not in {text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["release"].as_str().unwrap().to_string()
}

/// A private TMPDIR per test: afterwards it must hold no VM work directory and no process may
/// still mention it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("lab-e2e-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn lab(&self) -> Command {
        let mut c = Command::new(LAB);
        c.env("TMPDIR", self.dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = self.lab().args(args).output().unwrap();
        eprintln!(
            "lab {} -> {:?} in {:.1}s\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status.code(),
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.assert_clean();
        out
    }

    /// Starts `lab boot -- sleep 1000` and returns once its VM process exists.
    pub fn sleeping_vm(&self) -> std::process::Child {
        let child = self
            .lab()
            .args(["boot", "--", "sleep", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let needle = self.dir.path().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(120);
        while processes_mentioning(&needle)
            .iter()
            .all(|p| !p.contains("qemu"))
        {
            assert!(Instant::now() < deadline, "vm never started");
            std::thread::sleep(Duration::from_millis(200));
        }
        child
    }

    /// No leftovers: the scratch dir is empty and no process refers to it.
    pub fn assert_clean(&self) {
        let left: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "temp files left behind: {left:?}");
        let needle = self.dir.path().to_string_lossy().into_owned();
        // The VM process may take a moment to be reaped by the kernel after lab exits.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stray = processes_mentioning(&needle);
            if stray.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "stray processes: {stray:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The guest agent the lab binary embeds.
pub static GUEST_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-init"));

/// A lab (through the library) whose VMs talk over the lab's own vsock device, served by the
/// lab binary itself per VM; None (having said why) where QEMU is missing.
pub fn vsock_lab() -> Option<Lab> {
    let Ok(backend) = QemuBackend::find() else {
        assert!(!required(), "LAB_E2E=1 but QEMU is missing");
        eprintln!("SKIPPED: qemu-system-x86_64 not installed");
        return None;
    };
    let backend = backend.with_vsock(VsockBackend {
        program: LAB.into(),
        args: vec!["__vsock-backend".into()],
    });
    Some(Lab::new(
        Cache::from_env().unwrap(),
        Box::new(backend),
        GUEST_INIT,
    ))
}

// --- suites: verdicts against `expected` files ---

/// The bundled suites directory: `suites/` of the checkout the tests were built from, named
/// without resolving the crate's own directory (which a guest carrying only `suites/` lacks).
pub fn suites() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("lab/cli sits two levels down")
        .join("suites")
}

/// `PROGRAM:CASE → (RESULT, lab-only)` from an `expected` file.
pub fn expected(tree: &Path) -> BTreeMap<String, (String, bool)> {
    let mut out = BTreeMap::new();
    read_expected(tree, "", &mut out);
    out
}

/// The lines of `dir/expected` into `out`, programs prefixed with `prefix`; a line
/// `include SUB/expected` reads that file too, its programs under `SUB/`.
fn read_expected(dir: &Path, prefix: &str, out: &mut BTreeMap<String, (String, bool)>) {
    let text = std::fs::read_to_string(dir.join("expected")).unwrap();
    for l in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w[0] == "include" {
            let sub = Path::new(w[1]).parent().unwrap();
            let sub_prefix = format!("{prefix}{}/", sub.display());
            read_expected(&dir.join(sub), &sub_prefix, out);
            continue;
        }
        out.insert(
            format!("{prefix}{}", w[0]),
            (w[1].to_string(), w.get(2) == Some(&"lab-only")),
        );
    }
}

/// `(kernel, PROGRAM:CASE) → (result, reason)` from `lab test --format json`.
pub fn verdicts(json: &str) -> BTreeMap<(String, String), (String, String)> {
    json.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "case_finished")
        .map(|e| {
            let id = &e["id"];
            (
                (
                    id["kernel"].as_str().unwrap().to_string(),
                    format!(
                        "{}:{}",
                        id["program"].as_str().unwrap(),
                        id["case"].as_str().unwrap()
                    ),
                ),
                (
                    e["result"].as_str().unwrap().to_string(),
                    e["reason"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

/// Every expected case has its verdict on every kernel, and nothing else ran.
pub fn assert_verdicts(
    got: &BTreeMap<(String, String), (String, String)>,
    want: &BTreeMap<String, (String, bool)>,
    kernels: &[&str],
) {
    let mut wrong = Vec::new();
    for k in kernels {
        for (case, (result, _)) in want {
            match got.get(&(k.to_string(), case.clone())) {
                Some((r, _)) if r == result => {}
                other => wrong.push(format!("[{k}] {case}: want {result}, got {other:?}")),
            }
        }
    }
    for (k, case) in got.keys() {
        if !want.contains_key(case) {
            wrong.push(format!("[{k}] {case}: ran but is not expected"));
        }
    }
    assert!(wrong.is_empty(), "verdicts differ:\n{}", wrong.join("\n"));
}
