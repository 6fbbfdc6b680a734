use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    napi_build::setup();
    build_info();
}

/// Facts about this build for `engineBuildInfo()` (`gatehouse --version`): the target triple, the
/// cargo profile and the compiler. A toolchain or target change rebuilds the crate anyway, so
/// no extra rerun triggers are needed.
fn build_info() {
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
