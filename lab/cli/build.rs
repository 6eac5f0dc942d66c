//! Builds guest-init as a static binary for the guest and hands its path to the lab binary,
//! which embeds it: one `lab` executable carries its own guest agent.
//!
//! guest-init needs `-C target-feature=+crt-static`, which must not reach the host's build
//! scripts and proc macros; so it is built by a nested cargo with an explicit `--target` (where
//! rustflags apply to target code only) into its own target directory. `LAB_GUEST_INIT_BIN`
//! names a prebuilt binary instead.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo::rerun-if-env-changed=LAB_GUEST_INIT_BIN");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("guest-init");
    if let Some(prebuilt) = env::var_os("LAB_GUEST_INIT_BIN") {
        println!("cargo::rerun-if-changed={}", Path::new(&prebuilt).display());
        std::fs::copy(&prebuilt, &dest).expect("LAB_GUEST_INIT_BIN must name a readable file");
        return;
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("workspace root exists");
    for watched in [
        "guest-init/src",
        "guest-init/Cargo.toml",
        "lab/proto/src",
        "lab/proto/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }
    // <target>/<profile>/build/lab-<hash>/out → <target>/guest-init: shared by every profile
    // of the outer build, so the nested build stays incremental.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("guest-init"))
        .unwrap_or_else(|| out_dir.join("guest-init-target"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "-p",
            "guest-init",
            "--profile",
            "guest",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("failed to run cargo for guest-init");
    assert!(status.success(), "building guest-init failed: {status}");
    let built = target_dir.join(TARGET).join("guest").join("guest-init");
    std::fs::copy(&built, &dest).expect("guest-init was built");
}
