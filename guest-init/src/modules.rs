//! Loads the kernel modules a guest needs at boot, before any job runs: those named in lab's
//! boot list (`/lab/modules.boot`: the agent channel's, then `--module`'s), each with its
//! dependencies through [`crate::modprobe`], from the files the image carries; and for a
//! nested guest, the kvm module its CPU calls for. An image without a boot list (an older
//! lab's layout) has every module of its `modules.dep` loaded in order.

use crate::modprobe::{self, LocalOnly, ModDb, Resolved};
use crate::sys;

/// lab's boot list (see `lab_engine::guest::BOOT_MODULES`).
const BOOT_LIST: &str = "/lab/modules.boot";

/// Loads the boot modules of kernel `release`; returns one note per module loaded or failed.
pub fn load_all(release: &str) -> Vec<String> {
    let db = ModDb::load(release);
    let names: Vec<String> = match std::fs::read_to_string(BOOT_LIST) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        Err(_) => db.all().to_vec(),
    };
    let mut notes = Vec::new();
    for name in names {
        load_one(&db, &name, &mut notes);
    }
    notes
}

/// Loads `name` (a module or an alias) with its dependencies, noting what happened.
fn load_one(db: &ModDb, name: &str, notes: &mut Vec<String>) {
    let modules = match db.resolve(name) {
        Resolved::Modules(m) => m,
        Resolved::Builtin => return,
        // No index (a kernel without loadable modules): it may be built in all the same.
        Resolved::Unknown if modprobe::is_loaded(name) || builtin_in_sysfs(name) => return,
        Resolved::Unknown => {
            notes.push(format!(
                "failed to load {name}: no such module in this kernel"
            ));
            return;
        }
    };
    for module in modules {
        match modprobe::load(db, &module, "", &LocalOnly) {
            Ok(loaded) => notes.extend(loaded.into_iter().map(|m| format!("loaded {m}"))),
            Err(e) => notes.push(format!("failed to load {module}: {e}")),
        }
    }
}

/// Whether `/sys/module/<name>` exists: built-in modules with parameters appear there.
fn builtin_in_sysfs(name: &str) -> bool {
    sys::exists(&format!("/sys/module/{}", modprobe::normalise(name)))
}

/// For a guest booted with nested virtualization (`lab.nested=1`): loads kvm_amd or kvm_intel,
/// whichever the CPU's flags (svm, vmx) call for, so that /dev/kvm exists before any job.
pub fn load_nested(release: &str, cpuinfo: &str) -> Vec<String> {
    let Some(module) = kvm_module_for(cpuinfo) else {
        return vec![
            "nested virtualization asked for, but the CPU has neither svm nor vmx".to_string(),
        ];
    };
    let db = ModDb::load(release);
    let mut notes = Vec::new();
    load_one(&db, module, &mut notes);
    if !sys::exists("/dev/kvm") {
        notes.push(format!("no /dev/kvm after loading {module}"));
    }
    notes
}

/// The kvm module for a CPU whose `/proc/cpuinfo` is `cpuinfo`.
pub fn kvm_module_for(cpuinfo: &str) -> Option<&'static str> {
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))?
        .split_once(':')?
        .1;
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("svm") {
        Some("kvm_amd")
    } else if has("vmx") {
        Some("kvm_intel")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_flags_choose_the_kvm_module() {
        let amd = "processor\t: 0\nflags\t\t: fpu vme svm npt\n";
        let intel = "flags\t\t: fpu vmx ept\n";
        assert_eq!(kvm_module_for(amd), Some("kvm_amd"));
        assert_eq!(kvm_module_for(intel), Some("kvm_intel"));
        assert_eq!(kvm_module_for("flags\t: fpu svmx\n"), None);
        assert_eq!(kvm_module_for(""), None);
    }
}
