//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and generates
//! prost messages (and, for the replica service, tonic stubs); and records
//! the commit the binary is built from (`PUSHGATE_REVISION`, see
//! `src/build_info.rs`), so that replicas of different builds can be told
//! apart during a rolling upgrade.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/io/prometheus/client/metrics.proto",
        "proto/pushgate/v1/log.proto",
        "proto/pushgate/v1/replica.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;

    println!("cargo:rerun-if-env-changed=PUSHGATE_REVISION");
    let release = std::env::var("CARGO_PKG_VERSION")?;
    match revision() {
        Some(revision) => {
            println!("cargo:rustc-env=PUSHGATE_REVISION={revision}");
            println!("cargo:rustc-env=PUSHGATE_BUILD_VERSION={release}+{revision}");
        }
        None => println!("cargo:rustc-env=PUSHGATE_BUILD_VERSION={release}"),
    }
    Ok(())
}

/// The revision to record: `PUSHGATE_REVISION` if the builder set it (a
/// Docker build has no `.git`), else the commit checked out here, if this
/// crate is the top of a git work tree. (A source tree unpacked inside
/// another repository, as `scripts/old-release.sh` does, must not take that
/// repository's commit.)
fn revision() -> Option<String> {
    if let Ok(r) = std::env::var("PUSHGATE_REVISION") {
        return (!r.is_empty()).then_some(r);
    }
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let top = git(&here, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != here.canonicalize().ok()? {
        return None;
    }
    // Build again when the checked-out commit changes: HEAD, the branch it
    // names, and the packed refs a branch may live in (only files that
    // exist: a missing one would make cargo run this script every time).
    let git_dir = PathBuf::from(git(&here, &["rev-parse", "--absolute-git-dir"])?);
    let mut watch = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
    if let Some(branch) = git(&here, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git_dir.join(branch));
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    git(&here, &["rev-parse", "--short=12", "HEAD"])
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
