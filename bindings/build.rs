use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    napi_build::setup();
    build_info();
}

/// Facts about this build for `engineBuildInfo()` (`gatehouse --version`): the target triple, the
/// cargo profile, whether it is profile-guided and the compiler. A toolchain or target change
/// reruns this script anyway; a `RUSTFLAGS` change need not (with `--target`, which napi passes,
/// build scripts are built without the flags), hence the triggers below.
fn build_info() {
    println!("cargo:rerun-if-env-changed=RUSTFLAGS");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let target = env::var("TARGET").unwrap_or_default();
    // The profile's folder (target/<profile>/build/<crate>-<hash>/out) names custom profiles too
    // (`dist`); PROFILE says only `release` or `debug`.
    let profile = env::var("OUT_DIR")
        .ok()
        .and_then(|out| {
            let dir = Path::new(&out).ancestors().nth(3)?.file_name()?;
            Some(dir.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| env::var("PROFILE").unwrap_or_default());
    println!("cargo:rustc-env=GATEHOUSE_BUILD_TARGET={target}");
    println!("cargo:rustc-env=GATEHOUSE_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=GATEHOUSE_BUILD_PGO={}", pgo());
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if let Some(version) = version.filter(|v| !v.is_empty()) {
        println!("cargo:rustc-env=GATEHOUSE_BUILD_RUSTC={version}");
    }
}

/// `scripts/build-native.js --pgo` builds twice: instrumented (`-Cprofile-generate`), then with
/// the profile its training run wrote (`-Cprofile-use`). Cargo hands build scripts the flags as
/// one string separated by 0x1f, each either `-Cprofile-use=…` or `-C` then `profile-use=…`.
fn pgo() -> &'static str {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let has = |name: &str| {
        flags
            .split('\x1f')
            .any(|f| f.trim_start_matches("-C").starts_with(name))
    };
    if has("profile-generate") {
        "instrumented"
    } else if has("profile-use") {
        "applied"
    } else {
        "none"
    }
}
