//! What this binary is: its release and the commit it was built from.
//!
//! The release alone (`Cargo.toml`'s version) does not tell two builds
//! apart between tagged releases, and during a rolling upgrade operators need
//! to see which replicas run which build (`pushgate cluster status`), so the
//! version replicas report to each other carries the commit as SemVer build
//! metadata (`0.1.0+6beeb04c1a2b`). `build.rs` records the commit when the
//! binary is built from a git checkout, or takes `PUSHGATE_REVISION` from
//! the builder (a Docker build: `--build-arg PUSHGATE_REVISION=...`).

/// The release, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit this binary was built from, or `unknown` (as the reference
/// Pushgateway says in `pushgateway_build_info` when it does not know).
pub const REVISION: &str = match option_env!("PUSHGATE_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// The version replicas report to each other, `cluster status` shows and
/// `--version` prints: the release, plus `+<commit>` when the commit is
/// known (`build.rs`).
pub const BUILD_VERSION: &str = env!("PUSHGATE_BUILD_VERSION");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_version_is_the_release_with_the_commit_as_build_metadata() {
        let v = BUILD_VERSION;
        assert!(v.starts_with(VERSION), "{v}");
        match option_env!("PUSHGATE_REVISION") {
            Some(r) => assert_eq!(v, format!("{VERSION}+{r}")),
            None => assert_eq!(v, VERSION),
        }
    }
}
