//! End-to-end tests of the shared root (`--root host`): the guest's jobs run in the host's root
//! filesystem, read-only under a tmpfs overlay, served by virtiofsd through QEMU; no write of
//! the guest's, hostile or not, reaches the host; suites run there without being copied in.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )
)]

mod common;

use common::*;

/// Whether a shared root can be served here: virtiofsd is installed (QEMU's own on Debian 12,
/// the `virtiofsd` package later).
fn can_share_root() -> bool {
    let found = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file())
        || std::env::var_os("LAB_VIRTIOFSD").is_some();
    if !found {
        assert!(!required(), "LAB_E2E=1 but virtiofsd is not installed");
        eprintln!("SKIPPED: virtiofsd not installed (Debian 12: qemu-system-common)");
    }
    found
}

#[test]
fn the_host_root_is_there_read_only_and_guest_writes_stay_in_the_guest() {
    if !can_boot() || !installed("debian-6.1") || !can_share_root() {
        return;
    }
    let s = Scratch::new();
    let host = tempfile::Builder::new()
        .prefix("lab-root-e2e-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let marker = host.path().join("marker");
    std::fs::write(&marker, "from the host\n").unwrap();
    let m = marker.display();
    // The guest reads the host's file at its own path, overwrites it (in its overlay), then,
    // as a hostile guest would, mounts the share again read-write and writes through it.
    let script = format!(
        "cat {m}; echo from the guest > {m} && cat {m}; \
         mkdir -p /tmp/share && mount -t virtiofs labroot /tmp/share && \
         mount -o remount,rw /tmp/share && echo hostile > /tmp/share{m}; echo hostile=$?; \
         uname -n; test -e /lab/root && echo layers-visible || echo layers-hidden"
    );
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.1",
        "--root",
        "host",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        text.starts_with("from the host\nfrom the guest\n"),
        "{text}"
    );
    assert!(
        text.contains("hostile=2"),
        "a write through the share must fail: {text}"
    );
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    // The guest's own hostname, not the host's.
    assert!(text.contains("\nlab\n"), "{text}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "from the host\n");
}

#[test]
fn the_kyua_suites_pass_in_the_host_root_without_being_copied() {
    if !can_boot() || !installed("debian-6.1") || !can_share_root() {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("kyua");
    let config = suites().join("kyua.conf");
    // Every interface, requirements resolved in the host's root, cleanup, the unprivileged
    // user, jails (a namespace's root under the chroot): the part of the bundled suite that
    // says most about the root, in a third of the time of all of it.
    let programs = [
        "atf/basics.sh",
        "atf/require.sh",
        "atf/cleanup.sh",
        "atf/results.sh",
        "plain/*",
        "tap/*",
        "jail/isolation.sh",
    ];
    let mut args = vec![
        "test".to_string(),
        "--root".into(),
        "host".into(),
        "--config".into(),
        config.display().to_string(),
        tree.display().to_string(),
        "-j".into(),
        "2".into(),
        "--format".into(),
        "json".into(),
    ];
    args.extend(programs.iter().map(|p| p.to_string()));
    let out = s.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    let want: std::collections::BTreeMap<_, _> = expected(&tree)
        .into_iter()
        .filter(|(case, _)| {
            let program = case.split(':').next().unwrap_or_default();
            programs.iter().any(|p| match p.strip_suffix('*') {
                Some(dir) => program.starts_with(dir),
                None => program == *p,
            })
        })
        .collect();
    assert!(want.len() >= 30, "{want:?}");
    assert_verdicts(&got, &want, &["debian-6.1"]);
    // The results say which root the jobs ran in.
    let text = stdout(&out);
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains(r#""event":"run_started""#) && l.contains(r#""root":"/""#)),
        "{text}"
    );
}

#[test]
fn a_shared_root_that_is_not_a_directory_is_bad_input() {
    let s = Scratch::new();
    let out = s.run(&["boot", "--root", "/nonexistent/lab-root", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--root /nonexistent/lab-root: no such directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_lab_vmm_refuses_a_shared_root_by_name() {
    if !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.1",
        "--backend",
        "kvm",
        "--root",
        "host",
        "--",
        "true",
    ]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("no shared filesystem device") || err.contains("/dev/kvm"),
        "{err}"
    );
}

/// A third-party-style suite installed into a host prefix (suites/installed: a shared library,
/// data files, pkg-config data, programs linked with a runpath, a test that builds code) gives
/// through `lab test --root host` the verdicts Debian's kyua gives on the host, case by case.
#[test]
fn an_installed_suite_gives_kyuas_verdicts_case_by_case() {
    if !can_boot() || !installed("debian-6.1") || !can_share_root() {
        return;
    }
    let has_kyua = std::process::Command::new("kyua")
        .arg("about")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_kyua {
        assert!(!required(), "LAB_E2E=1 but kyua is not installed");
        eprintln!("SKIPPED: Debian's kyua is not installed");
        return;
    }
    let reference = suites().join("../scripts/installed-reference");
    let kyua = std::process::Command::new(&reference)
        .arg("--keep")
        .output()
        .unwrap();
    let kyua_err = String::from_utf8_lossy(&kyua.stderr).into_owned();
    assert!(kyua.status.success(), "installed-reference: {kyua_err}");
    let prefix = std::path::PathBuf::from(kyua_err.lines().last().unwrap().trim());
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Removed(prefix.clone());
    let want: std::collections::BTreeMap<String, String> = String::from_utf8_lossy(&kyua.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(c, r)| (c.to_string(), r.trim().to_string()))
        .collect();
    assert!(want.len() >= 10, "kyua ran too little: {want:?}");

    let s = Scratch::new();
    let tree = prefix.join("tests/greet");
    let out = s.run(&[
        "test",
        "--root",
        "host",
        "--config",
        &tree.join("kyua.conf").display().to_string(),
        &tree.display().to_string(),
        "-j",
        "2",
        "--format",
        "json",
    ]);
    let lab = verdicts(&stdout(&out));
    let mut differ = Vec::new();
    for (case, result) in &want {
        let got = lab
            .get(&("debian-6.1".to_string(), case.clone()))
            .map(|(r, reason)| format!("{r} ({reason})"));
        if got.as_deref().map(|g| g.split(' ').next()) != Some(Some(result.as_str())) {
            differ.push(format!("{case}: kyua {result}, lab {got:?}"));
        }
    }
    assert!(
        differ.is_empty(),
        "lab differs from kyua:\n{}",
        differ.join("\n")
    );
    // In lab's own userland the program would not load the library it was built against:
    // lab says so before anything boots.
    let out = s.run(&[
        "test",
        &tree.display().to_string(),
        "lib/greet_test:hello",
        "--format",
        "none",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("lib/greet_test loads ") && err.contains("libgreet.so.1 on this host"),
        "{err}"
    );
}

/// A suite larger than the guest's RAM (600 MB of data beside a 512 MiB VM) runs from the host
/// root: nothing of it is copied into the guest.
#[test]
fn a_suite_larger_than_guest_ram_runs_from_the_host_root() {
    if !can_boot() || !installed("debian-6.1") || !can_share_root() {
        return;
    }
    let suite = tempfile::Builder::new()
        .prefix("lab-big-suite-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let dir = suite.path();
    std::fs::write(
        dir.join("Kyuafile"),
        "syntax(2)\ntest_suite('big')\nplain_test_program{name='big.sh'}\n",
    )
    .unwrap();
    // A sparse 600 MB file whose last bytes say where they are.
    let data = std::fs::File::create(dir.join("data.bin")).unwrap();
    data.set_len(600 << 20).unwrap();
    drop(data);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("data.bin"))
            .unwrap();
        f.seek(SeekFrom::End(-4)).unwrap();
        f.write_all(b"end\n").unwrap();
    }
    let script = format!(
        "#!/bin/sh\nd={}\n[ \"$(wc -c < $d/data.bin)\" -eq {} ] && [ \"$(tail -c 4 $d/data.bin)\" = end ]\n",
        dir.display(),
        600u64 << 20
    );
    std::fs::write(dir.join("big.sh"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("big.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    let s = Scratch::new();
    let out = s.run(&[
        "test",
        "--root",
        "host",
        "--memory",
        "512",
        &dir.display().to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    assert_eq!(
        got[&("debian-6.1".to_string(), "big.sh:main".to_string())].0,
        "passed",
        "{got:?}"
    );
}
