//! A disk whose syncs fail, for fault tests: `failing_syncs.c`, compiled with
//! the machine's C compiler and preloaded into the test's pushgate processes,
//! fails every `fsync` and `fdatasync` of one process (or those of the files
//! whose path contains a given part) with `EIO`, or holds them without an
//! answer, while the test says so. The
//! process and its disk are real; only the answer of the sync calls is
//! chosen, as a failing disk would give it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SOURCE: &str = include_str!("failing_syncs.c");

pub struct FailingSyncs {
    library: PathBuf,
    /// Holds one file per process whose syncs fail, named by its PID.
    triggers: tempfile::TempDir,
}

impl FailingSyncs {
    /// Builds the preload library (once per test binary).
    pub fn new() -> FailingSyncs {
        static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
        let library = LIBRARY.get_or_init(build).clone();
        FailingSyncs {
            library,
            triggers: super::temp_dir("failing-syncs"),
        }
    }

    /// The command prefix that runs a program with the library preloaded.
    pub fn wrap(&self) -> Vec<String> {
        vec![
            "env".into(),
            format!("LD_PRELOAD={}", self.library.display()),
            format!("PUSHGATE_TEST_FAILING_SYNCS={}", self.triggers.path().display()),
        ]
    }

    /// From now on every sync of process `pid` fails with EIO.
    pub fn fail(&self, pid: u32) {
        self.fail_paths_containing(pid, "");
    }

    /// From now on the syncs of process `pid` fail with EIO for files whose
    /// path contains `part` (every file if `part` is empty); other files sync
    /// as usual.
    pub fn fail_paths_containing(&self, pid: u32, part: &str) {
        std::fs::write(self.trigger(pid), part).expect("write the trigger file");
    }

    /// From now on no sync of process `pid` returns, as on a disk that
    /// stopped answering (until [`FailingSyncs::unhang`]).
    pub fn hang(&self, pid: u32) {
        std::fs::write(self.hang_trigger(pid), "").expect("write the hang trigger file");
    }

    /// The syncs of process `pid` held by [`FailingSyncs::hang`] return.
    pub fn unhang(&self, pid: u32) {
        std::fs::remove_file(self.hang_trigger(pid)).expect("remove the hang trigger file");
    }

    fn hang_trigger(&self, pid: u32) -> PathBuf {
        self.triggers.path().join(format!("{pid}.hang"))
    }

    /// Syncs of process `pid` succeed again.
    pub fn heal(&self, pid: u32) {
        std::fs::remove_file(self.trigger(pid)).expect("remove the trigger file");
    }

    fn trigger(&self, pid: u32) -> PathBuf {
        self.triggers.path().join(pid.to_string())
    }
}

/// Compiles the library into Cargo's scratch directory for tests, under a
/// name of this process's own first, so that test binaries running at the
/// same time never load a half-written file.
fn build() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("failing-syncs");
    std::fs::create_dir_all(&dir).expect("a directory for the preload library");
    let source = dir.join(format!("failing_syncs.{}.c", std::process::id()));
    let building = dir.join(format!("libfailing_syncs.{}.so", std::process::id()));
    let library = dir.join("libfailing_syncs.so");
    std::fs::write(&source, SOURCE).expect("write the preload source");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&building)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("run cc (the C compiler that builds the failing-sync library)");
    let _ = std::fs::remove_file(&source);
    assert!(
        out.status.success(),
        "cc failed to build the failing-sync library: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&building, &library).expect("move the preload library into place");
    library
}
