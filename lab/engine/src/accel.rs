//! Chooses how guests are executed: KVM when /dev/kvm is usable *and* a real boot of the kernel
//! under it succeeds, TCG otherwise. The verdict of that probe boot is cached per kernel and
//! host in `<cache>/state/kvm-verdicts.json`, and every choice carries its reason, saying when
//! it comes from the cache.
//!
//! The probe's deadline is the caller's ([`ProbePolicy`]): a nested host boots slowly, and a
//! deadline too short for it must not decide for good. So a positive verdict stands until the
//! host changes, while a negative one is asked again once it is older than the policy's
//! `negative_ttl`, or when the caller allows a longer deadline than the probe that failed had.
//! A host whose KVM is `kvm_pvm` is not probed at all: under it, guest kernel code runs in
//! KVM's instruction emulator, which stock kernels cannot survive.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vm::Accel;

/// Whether this user can use /dev/kvm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmAccess {
    /// Opened read-write.
    Usable,
    /// No /dev/kvm.
    Missing,
    /// Present, but not for this user.
    Denied(String),
    /// Opening failed otherwise.
    Failed(String),
}

impl KvmAccess {
    /// Probes `/dev/kvm` (or `$LAB_KVM_DEVICE`, for tests).
    pub fn probe() -> Self {
        let path = std::env::var_os("LAB_KVM_DEVICE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/kvm"));
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(_) => Self::Usable,
            Err(e) if e.kind() == ErrorKind::NotFound => Self::Missing,
            Err(e) if e.kind() == ErrorKind::PermissionDenied => Self::Denied(format!(
                "{} is not accessible to this user ({e}); ask for membership of its group (usually `kvm`)",
                path.display()
            )),
            Err(e) => Self::Failed(format!("{}: {e}", path.display())),
        }
    }

    /// One line for `lab doctor`.
    pub fn describe(&self) -> String {
        match self {
            Self::Usable => "usable (read-write)".into(),
            Self::Missing => "missing: no hardware virtualisation on this host".into(),
            Self::Denied(why) | Self::Failed(why) => why.clone(),
        }
    }
}

/// Whether this host's KVM is `kvm_pvm` (pagetable-based, nested), under which stock kernels
/// cannot run.
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The host's KVM module, which says what kind of KVM this is.
pub fn kvm_flavour() -> String {
    for (module, what) in [
        ("kvm_intel", "kvm_intel (hardware, Intel VT-x)"),
        ("kvm_amd", "kvm_amd (hardware, AMD-V)"),
        (
            "kvm_pvm",
            "kvm_pvm (nested, pagetable-based; stock kernels usually cannot run under it)",
        ),
    ] {
        if Path::new("/sys/module").join(module).exists() {
            return what.to_string();
        }
    }
    "unknown".to_string()
}

/// Whether QEMU under KVM can give guests hardware virtualization: the host's kvm_amd or
/// kvm_intel `nested` parameter, in words (`Ok` when on, `Err` with why not).
pub fn host_nested() -> Result<String, String> {
    host_nested_in(Path::new("/sys/module"))
}

/// [`host_nested`] over a given `/sys/module`.
pub fn host_nested_in(sys_module: &Path) -> Result<String, String> {
    for module in ["kvm_amd", "kvm_intel"] {
        let dir = sys_module.join(module);
        if !dir.exists() {
            continue;
        }
        let value = std::fs::read_to_string(dir.join("parameters/nested")).unwrap_or_default();
        return match value.trim() {
            "1" | "Y" | "y" => Ok(format!("{module} runs with nested=1")),
            other => Err(format!(
                "{module} runs with nested={} (as root: modprobe -r {module}; modprobe {module} nested=1)",
                if other.is_empty() { "?" } else { other }
            )),
        };
    }
    Err("no kvm_amd or kvm_intel on this host".into())
}

/// The host kernel's release.
pub fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelRequest {
    /// Decide (KVM if it boots this kernel).
    #[default]
    Auto,
    /// Force one.
    Force(Accel),
}

/// A choice and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    /// The accelerator.
    pub accel: Accel,
    /// Why, in words for `lab doctor` and `--verbose`.
    pub reason: String,
}

/// A cached probe result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the kernel booted to guest-init under KVM.
    pub kvm_boots: bool,
    /// What happened.
    pub detail: String,
    /// When (seconds since the epoch).
    pub probed_unix: u64,
    /// The deadline the probe had, in seconds (0: unknown, from an older lab).
    #[serde(default)]
    pub deadline_secs: u64,
}

/// How the KVM probe is made and how long its verdict is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePolicy {
    /// Launch → agent ready within this, or KVM "cannot boot" the kernel.
    pub deadline: std::time::Duration,
    /// A negative verdict older than this is probed again.
    pub negative_ttl: std::time::Duration,
}

/// The probe's default deadline: long enough for a nested (KVM in a VM) boot on a loaded host.
pub const DEFAULT_PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a negative verdict is trusted by default.
pub const DEFAULT_NEGATIVE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Default for ProbePolicy {
    fn default() -> Self {
        Self {
            deadline: DEFAULT_PROBE_DEADLINE,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        }
    }
}

impl Verdict {
    /// Whether this cached verdict still decides under `policy` at `now_unix`: a positive one
    /// always; a negative one while it is younger than the policy's TTL and was not made with a
    /// shorter deadline than the policy's.
    pub fn still_holds(&self, policy: &ProbePolicy, now_unix: u64) -> bool {
        if self.kvm_boots {
            return true;
        }
        let age = now_unix.saturating_sub(self.probed_unix);
        age < policy.negative_ttl.as_secs() && self.deadline_secs >= policy.deadline.as_secs()
    }
}

/// `unix` as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_minutes(unix: u64) -> String {
    let days = unix / 86_400;
    let rem = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// The cached verdicts, keyed by [`verdict_key`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Verdicts {
    /// key → verdict.
    pub entries: BTreeMap<String, Verdict>,
}

/// The key of a verdict: the kernel, the host kernel and its KVM flavour (a host upgrade or a
/// move to other hardware asks again).
pub fn verdict_key(kernel_id: &str) -> String {
    format!("{kernel_id}|{}|{}", host_release(), kvm_flavour())
}

impl Verdicts {
    /// Loads `path`; a missing or unreadable file is an empty set (it is only a cache).
    pub fn load(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Saves to `path` atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(tmp, path)
    }
}

/// What [`choose`] knows of the host and the kernel.
#[derive(Debug, Clone, Copy)]
pub struct ChoiceInput<'a> {
    /// What the user asked for.
    pub request: AccelRequest,
    /// Whether /dev/kvm can be used.
    pub access: &'a KvmAccess,
    /// Whether the host's KVM is `kvm_pvm`.
    pub pvm: bool,
    /// The kernel's name, for reasons.
    pub kernel_name: &'a str,
    /// The cached verdict, if any.
    pub cached: Option<&'a Verdict>,
    /// The probe's deadline and the verdicts' lifetime.
    pub policy: ProbePolicy,
    /// Now, in seconds since the epoch.
    pub now_unix: u64,
}

/// Decides the accelerator. `probe` boots the kernel under KVM and says whether guest-init came
/// up; it is called only when KVM is usable, not PVM, and no cached verdict still holds. Returns
/// the choice and the fresh verdict to cache, if one was made.
pub fn choose(
    input: ChoiceInput<'_>,
    probe: &mut dyn FnMut() -> Verdict,
) -> (AccelChoice, Option<Verdict>) {
    let ChoiceInput {
        request,
        access,
        pvm,
        kernel_name,
        cached,
        policy,
        now_unix,
    } = input;
    if let AccelRequest::Force(accel) = request {
        let reason = format!("{} requested", accel.name());
        return (AccelChoice { accel, reason }, None);
    }
    let tcg = |reason: String| AccelChoice {
        accel: Accel::Tcg,
        reason,
    };
    if *access != KvmAccess::Usable {
        let reason = format!(
            "/dev/kvm {}; using TCG (software emulation)",
            access.describe()
        );
        return (tcg(reason), None);
    }
    if pvm {
        let reason = "KVM here is kvm_pvm: guest kernel code runs in KVM's instruction emulator, \
                      which stock kernels cannot survive; using TCG"
            .to_string();
        return (tcg(reason), None);
    }
    let (verdict, fresh) = match cached.filter(|v| v.still_holds(&policy, now_unix)) {
        Some(v) => (v.clone(), None),
        None => {
            let v = probe();
            (v.clone(), Some(v))
        }
    };
    let when = if fresh.is_some() {
        "probed now".to_string()
    } else if verdict.kvm_boots {
        format!("cached from {}", utc_minutes(verdict.probed_unix))
    } else {
        format!(
            "cached from {}, asked again after {} or with `lab doctor --reprobe`",
            utc_minutes(verdict.probed_unix),
            utc_minutes(verdict.probed_unix + policy.negative_ttl.as_secs())
        )
    };
    let choice = if verdict.kvm_boots {
        AccelChoice {
            accel: Accel::Kvm,
            reason: format!("KVM boots {kernel_name} ({}; {when})", verdict.detail),
        }
    } else {
        tcg(format!(
            "KVM is usable but did not boot {kernel_name} ({}; {when}); using TCG",
            verdict.detail
        ))
    };
    (choice, fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn verdict(ok: bool, probed_unix: u64, deadline_secs: u64) -> Verdict {
        Verdict {
            kvm_boots: ok,
            detail: if ok {
                "ready in 0.3s"
            } else {
                "KVM internal error"
            }
            .into(),
            probed_unix,
            deadline_secs,
        }
    }

    fn input<'a>(access: &'a KvmAccess, cached: Option<&'a Verdict>) -> ChoiceInput<'a> {
        ChoiceInput {
            request: AccelRequest::Auto,
            access,
            pvm: false,
            kernel_name: "debian-6.1",
            cached,
            policy: ProbePolicy::default(),
            now_unix: NOW,
        }
    }

    #[test]
    fn forced_unusable_and_pvm_kvm_never_probe() {
        let mut probe = || -> Verdict { panic!("must not probe") };
        let missing = KvmAccess::Missing;
        let forced = ChoiceInput {
            request: AccelRequest::Force(Accel::Kvm),
            ..input(&missing, None)
        };
        let (c, v) = choose(forced, &mut probe);
        assert_eq!(c.accel, Accel::Kvm);
        assert!(v.is_none());
        let denied = KvmAccess::Denied("no".into());
        let (c, _) = choose(input(&denied, None), &mut probe);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("no"), "{}", c.reason);
        let usable = KvmAccess::Usable;
        let pvm = ChoiceInput {
            pvm: true,
            ..input(&usable, None)
        };
        let (c, _) = choose(pvm, &mut probe);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("kvm_pvm"), "{}", c.reason);
    }

    #[test]
    fn the_probe_runs_once_and_its_verdict_decides() {
        let mut calls = 0;
        let mut probe = || {
            calls += 1;
            verdict(false, NOW, 60)
        };
        let usable = KvmAccess::Usable;
        let (c, fresh) = choose(input(&usable, None), &mut probe);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("did not boot debian-6.1"), "{}", c.reason);
        assert!(c.reason.contains("probed now"), "{}", c.reason);
        assert!(fresh.is_some());
        let cached = verdict(true, NOW - 10, 60);
        let (c, fresh) = choose(input(&usable, Some(&cached)), &mut probe);
        assert_eq!(c.accel, Accel::Kvm);
        assert!(c.reason.contains("cached from"), "{}", c.reason);
        assert!(fresh.is_none());
        assert_eq!(calls, 1);
    }

    #[test]
    fn negative_verdicts_are_asked_again_when_stale_or_made_with_a_shorter_deadline() {
        let policy = ProbePolicy::default();
        let usable = KvmAccess::Usable;
        // (verdict, still holds)
        let table = [
            (verdict(true, 0, 1), true),
            (verdict(false, NOW - 60, 60), true),
            (verdict(false, NOW - 60, 20), false),
            (verdict(false, NOW - 60, 0), false),
            (verdict(false, NOW - 25 * 3600, 60), false),
        ];
        for (v, holds) in &table {
            assert_eq!(v.still_holds(&policy, NOW), *holds, "{v:?}");
            let mut probed = false;
            let mut probe = || {
                probed = true;
                verdict(true, NOW, 60)
            };
            let (c, _) = choose(input(&usable, Some(v)), &mut probe);
            assert_eq!(probed, !holds, "{v:?}");
            if *holds && !v.kvm_boots {
                assert!(c.reason.contains("lab doctor --reprobe"), "{}", c.reason);
            }
        }
    }

    #[test]
    fn nesting_is_read_from_the_kvm_modules_parameter() {
        let dir = tempfile::tempdir().unwrap();
        assert!(host_nested_in(dir.path())
            .unwrap_err()
            .contains("no kvm_amd"));
        let params = dir.path().join("kvm_amd/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("nested"), "0\n").unwrap();
        let why = host_nested_in(dir.path()).unwrap_err();
        assert!(
            why.contains("nested=0") && why.contains("modprobe kvm_amd nested=1"),
            "{why}"
        );
        std::fs::write(params.join("nested"), "1\n").unwrap();
        assert_eq!(
            host_nested_in(dir.path()).unwrap(),
            "kvm_amd runs with nested=1"
        );
    }

    #[test]
    fn times_print_as_utc_minutes() {
        assert_eq!(utc_minutes(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minutes(1_796_306_520), "2026-12-03 14:02 UTC");
        assert_eq!(utc_minutes(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn verdicts_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvm-verdicts.json");
        assert!(Verdicts::load(&path).entries.is_empty());
        let mut v = Verdicts::default();
        v.entries.insert(verdict_key("k1"), verdict(true, 1, 60));
        v.save(&path).unwrap();
        assert_eq!(Verdicts::load(&path).entries, v.entries);
        // An older lab's verdicts (no deadline) still load.
        std::fs::write(
            &path,
            r#"{"entries":{"k":{"kvm_boots":false,"detail":"x","probed_unix":5}}}"#,
        )
        .unwrap();
        assert_eq!(Verdicts::load(&path).entries["k"].deadline_secs, 0);
        std::fs::write(&path, "garbage").unwrap();
        assert!(Verdicts::load(&path).entries.is_empty());
    }
}
