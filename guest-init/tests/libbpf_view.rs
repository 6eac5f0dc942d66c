//! guest-init's eBPF loader against libbpf's view of the same objects: the bundled test
//! objects and the compat fixtures written as Cilium and Kmesh write theirs, compiled with
//! their flags, must give the maps (name, type, sizes, entries, flags) and programs (name,
//! section) that libbpf's `bpf_object__open_file()` gives. No kernel is involved: both sides
//! read the object. Needs clang, cc and libbpf-dev; without them the test says so and passes,
//! or fails under `LAB_E2E=1`.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A map as both sides describe it: type, key size, value size, max entries, flags.
type MapView = (u32, u32, u32, u32, u32);

/// An object's maps by name and programs by name (section, type).
#[derive(Debug, Default)]
struct View {
    maps: BTreeMap<String, MapView>,
    programs: BTreeMap<String, (String, u32)>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether clang, cc and libbpf's headers are here (under LAB_E2E=1 they must be).
fn have_tools() -> bool {
    let ok = runs("clang", "--version")
        && runs("cc", "--version")
        && Path::new("/usr/include/bpf/libbpf.h").is_file();
    if !ok {
        assert!(
            std::env::var("LAB_E2E").as_deref() != Ok("1"),
            "LAB_E2E=1 but clang, cc or libbpf-dev is missing"
        );
        eprintln!("SKIPPED: needs clang, cc and libbpf-dev");
    }
    ok
}

fn check(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Compiles `source` with `flags` and `includes` into `out`.
fn compile(source: &Path, flags: &[&str], includes: &[PathBuf], out: &Path) {
    let mut cmd = Command::new("clang");
    cmd.args(flags);
    for dir in includes {
        cmd.arg(format!("-I{}", dir.display()));
    }
    check(cmd.arg("-c").arg(source).arg("-o").arg(out));
}

/// libbpf's view, or None where libbpf refuses the object.
fn libbpf_view(viewer: &Path, object: &Path) -> Option<View> {
    let out = Command::new(viewer).arg(object).output().unwrap();
    if out.status.code() == Some(3) {
        return None;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut view = View::default();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let n = |i: usize| w[i].parse::<u32>().unwrap();
        match w[0] {
            "map" => {
                view.maps
                    .insert(w[1].to_string(), (n(2), n(3), n(4), n(5), n(6)));
            }
            "prog" => {
                view.programs
                    .insert(w[1].to_string(), (w[2].to_string(), n(3)));
            }
            other => panic!("unexpected line {other}"),
        }
    }
    Some(view)
}

/// guest-init's view (`bpf describe`).
fn lab_view(object: &Path) -> View {
    let out = check(Command::new(env!("CARGO_BIN_EXE_guest-init")).args([
        "bpf",
        "describe",
        &object.display().to_string(),
    ]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |v: &serde_json::Value, k: &str| u32::try_from(v[k].as_u64().unwrap()).unwrap();
    let mut view = View::default();
    for m in json["maps"].as_array().unwrap() {
        view.maps.insert(
            m["name"].as_str().unwrap().to_string(),
            (
                n(m, "type"),
                n(m, "key_size"),
                n(m, "value_size"),
                n(m, "max_entries"),
                n(m, "flags"),
            ),
        );
    }
    for p in json["programs"].as_array().unwrap() {
        view.programs.insert(
            p["name"].as_str().unwrap().to_string(),
            (p["section"].as_str().unwrap().to_string(), n(p, "type")),
        );
    }
    view
}

/// libbpf names a data section's map after the object (`reply_st.rodata`) where lab keeps the
/// section's name (`.rodata`); names with two dots (`.rodata.str1.1`) it keeps whole.
fn same_map_name(libbpf: &str, lab: &str) -> bool {
    libbpf == lab || (lab.starts_with('.') && libbpf.ends_with(lab))
}

/// Asserts the two views agree; program types only where libbpf gives one (libbpf 1.x
/// matches section names exactly, where cilium/ebpf, whose rules lab follows, matches
/// `xdp/...` and `tc/...` by prefix).
fn assert_agree(name: &str, libbpf: &View, lab: &View) {
    assert_eq!(
        libbpf.maps.len(),
        lab.maps.len(),
        "{name}: {libbpf:?} vs {lab:?}"
    );
    for (lname, def) in &libbpf.maps {
        let found = lab
            .maps
            .iter()
            .find(|(n, _)| same_map_name(lname, n))
            .unwrap_or_else(|| panic!("{name}: lab has no map {lname}: {lab:?}"));
        assert_eq!(
            def, found.1,
            "{name}: map {lname} (type, key, value, entries, flags)"
        );
    }
    let sections = |v: &View| -> BTreeMap<String, String> {
        v.programs
            .iter()
            .map(|(n, (s, _))| (n.clone(), s.clone()))
            .collect()
    };
    assert_eq!(sections(libbpf), sections(lab), "{name}: programs");
    for (prog, (_, t)) in &libbpf.programs {
        if *t != 0 {
            assert_eq!(*t, lab.programs[prog].1, "{name}: type of {prog}");
        }
    }
}

#[test]
fn the_loader_sees_the_maps_and_programs_libbpf_sees() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let viewer = dir.path().join("view");
    check(
        Command::new("cc")
            .arg(repo().join("guest-init/tests/libbpf/view.c"))
            .arg("-o")
            .arg(&viewer)
            .arg("-lbpf"),
    );
    let suites = repo().join("suites/ebpf");
    let compat_flags = [
        "-O2",
        "-g",
        "--target=bpf",
        "-mcpu=v3",
        "-nostdinc",
        "-Werror",
        "-Wall",
        "-Wno-unused-function",
    ];
    let lab_flags = ["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86"];
    let lab_includes = vec![
        suites.join("tests/include"),
        suites.join("include"),
        PathBuf::from("/usr/include/x86_64-linux-gnu"),
    ];
    let mut objects: Vec<(PathBuf, &[&str], Vec<PathBuf>)> = Vec::new();
    for sub in ["compat/cilium", "compat/kmesh"] {
        for entry in std::fs::read_dir(suites.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with("_test.c") {
                continue; // a maps setup program, for the host
            }
            objects.push((path, &compat_flags, vec![suites.join("compat/include")]));
        }
    }
    for entry in std::fs::read_dir(suites.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "c") {
            objects.push((path, &lab_flags, lab_includes.clone()));
        }
    }
    objects.sort();
    let mut compared = 0;
    let mut refused = Vec::new();
    for (source, flags, includes) in &objects {
        let name = source.file_name().unwrap().to_string_lossy().into_owned();
        let object = dir.path().join(format!("{name}.o"));
        compile(source, flags, includes, &object);
        let lab = lab_view(&object);
        match libbpf_view(&viewer, &object) {
            Some(libbpf) => {
                assert_agree(&name, &libbpf, &lab);
                compared += 1;
            }
            None => refused.push((name, lab)),
        }
    }
    // libbpf 1.x refuses iproute2's legacy `maps` section; lab, like cilium/ebpf, reads it:
    // the prog array, and the "<id>/<slot>" programs typed as the object's tc programs.
    let names: Vec<&str> = refused.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["iproute2_tail_test.c"], "objects libbpf refused");
    let lab = &refused[0].1;
    assert_eq!(lab.maps["cilium_calls"], (3, 4, 4, 8, 0));
    assert_eq!(lab.maps["tcp_seen"], (1, 4, 8, 16, 0));
    assert_eq!(lab.programs["tail_udp"], ("2/1".to_string(), 3));
    assert_eq!(lab.programs["tail_tcp"], ("2/2".to_string(), 3));
    assert!(compared >= 8, "compared only {compared} objects");
}
