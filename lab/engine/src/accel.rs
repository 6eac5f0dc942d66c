//! Chooses how guests are executed: KVM when /dev/kvm is usable *and* a real boot of the kernel
//! under it succeeds, TCG otherwise. The verdict of that probe boot is cached per kernel and
//! host in `<cache>/state/kvm-verdicts.json`, and every choice carries its reason.

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

/// Decides the accelerator. `probe` boots the kernel under KVM and says whether guest-init came
/// up (it is called only when the verdict is not cached and KVM is usable).
pub fn choose(
    request: AccelRequest,
    access: &KvmAccess,
    kernel_name: &str,
    cached: Option<&Verdict>,
    probe: &mut dyn FnMut() -> Verdict,
) -> (AccelChoice, Option<Verdict>) {
    if let AccelRequest::Force(accel) = request {
        let reason = format!("{} requested with --accel", accel.name());
        return (AccelChoice { accel, reason }, None);
    }
    if *access != KvmAccess::Usable {
        let reason = format!(
            "/dev/kvm {}; using TCG (software emulation)",
            access.describe()
        );
        return (
            AccelChoice {
                accel: Accel::Tcg,
                reason,
            },
            None,
        );
    }
    let (verdict, fresh) = match cached {
        Some(v) => (v.clone(), None),
        None => {
            let v = probe();
            (v.clone(), Some(v))
        }
    };
    let choice = if verdict.kvm_boots {
        AccelChoice {
            accel: Accel::Kvm,
            reason: format!("KVM boots {kernel_name} ({})", verdict.detail),
        }
    } else {
        AccelChoice {
            accel: Accel::Tcg,
            reason: format!(
                "KVM is usable but cannot boot {kernel_name} ({}); using TCG",
                verdict.detail
            ),
        }
    };
    (choice, fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(ok: bool) -> Verdict {
        Verdict {
            kvm_boots: ok,
            detail: if ok {
                "ready in 0.3s"
            } else {
                "KVM internal error"
            }
            .into(),
            probed_unix: 1,
        }
    }

    #[test]
    fn forced_and_unusable_kvm_never_probe() {
        let mut probe = || -> Verdict { panic!("must not probe") };
        let (c, v) = choose(
            AccelRequest::Force(Accel::Kvm),
            &KvmAccess::Missing,
            "k",
            None,
            &mut probe,
        );
        assert_eq!(c.accel, Accel::Kvm);
        assert!(v.is_none());
        let denied = KvmAccess::Denied("no".into());
        let (c, _) = choose(AccelRequest::Auto, &denied, "k", None, &mut probe);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("no"), "{}", c.reason);
    }

    #[test]
    fn the_probe_runs_once_and_its_verdict_decides() {
        let mut calls = 0;
        let mut probe = || {
            calls += 1;
            verdict(false)
        };
        let (c, fresh) = choose(
            AccelRequest::Auto,
            &KvmAccess::Usable,
            "debian-6.1",
            None,
            &mut probe,
        );
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("cannot boot debian-6.1"), "{}", c.reason);
        assert!(fresh.is_some());
        let cached = verdict(true);
        let (c, fresh) = choose(
            AccelRequest::Auto,
            &KvmAccess::Usable,
            "debian-6.1",
            Some(&cached),
            &mut probe,
        );
        assert_eq!(c.accel, Accel::Kvm);
        assert!(fresh.is_none());
        assert_eq!(calls, 1);
    }

    #[test]
    fn verdicts_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvm-verdicts.json");
        assert!(Verdicts::load(&path).entries.is_empty());
        let mut v = Verdicts::default();
        v.entries.insert(verdict_key("k1"), verdict(true));
        v.save(&path).unwrap();
        assert_eq!(Verdicts::load(&path).entries, v.entries);
        std::fs::write(&path, "garbage").unwrap();
        assert!(Verdicts::load(&path).entries.is_empty());
    }
}
