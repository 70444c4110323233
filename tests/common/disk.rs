//! Small disks for fault tests: tmpfs mounts of a chosen size that only the
//! test's own processes see.
//!
//! A holder process (`unshare --mount`, then `sleep`) owns a private mount
//! namespace; the tmpfs mounts live there and nowhere else, so nothing leaks
//! onto the machine if a test dies, and they vanish with the holder (stopped
//! by PID on drop). Servers run inside the namespace through `nsenter`, which
//! execs the server in place: the PID a test holds is the server's own.
//! Needs root (or unprivileged user namespaces); `available()` says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MountNamespace {
    holder: Child,
}

/// Why a namespace could not be made, for a test's skip message.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl MountNamespace {
    /// A new private mount namespace, held open until this value is dropped.
    pub fn new() -> Result<MountNamespace, Unavailable> {
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Unavailable(format!("cannot run unshare: {e}")))?;
        let mut ns = MountNamespace { holder };
        // The holder is ready once its mount namespace differs from ours.
        let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = ns.holder.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = ns.holder.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(Unavailable(format!(
                    "unshare --mount failed ({status}): {}",
                    err.trim()
                )));
            }
            let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", ns.holder.id())).ok();
            if theirs.is_some() && theirs != ours {
                return Ok(ns);
            }
            if Instant::now() > deadline {
                return Err(Unavailable("the unshare holder did not enter a new namespace".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn wrap(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Runs a command inside the namespace; panics with its output if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "--"])
            .args(args)
            .output()
            .expect("run nsenter");
        assert!(
            out.status.success(),
            "{args:?} in the test's mount namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Mounts an empty tmpfs of `bytes` at `path` (created if missing).
    pub fn mount_disk(&self, path: &Path, bytes: u64) -> PathBuf {
        std::fs::create_dir_all(path).expect("mount point");
        let size = format!("size={bytes}");
        self.run(&["mount", "-t", "tmpfs", "-o", &size, "tmpfs", &path.to_string_lossy()]);
        path.to_path_buf()
    }

    /// Gives the disk at `path` a new size (never below what it holds).
    pub fn resize_disk(&self, path: &Path, bytes: u64) {
        let opts = format!("remount,size={bytes}");
        self.run(&["mount", "-o", &opts, &path.to_string_lossy()]);
    }

    /// Bytes in use on the disk at `path`.
    pub fn used_bytes(&self, path: &Path) -> u64 {
        let out = self.run(&["df", "-B1", "--output=used", &path.to_string_lossy()]);
        out.lines()
            .filter_map(|l| l.trim().parse().ok())
            .next()
            .expect("df output")
    }

    /// Shrinks the disk at `path` so that only about `free` more bytes fit.
    pub fn leave_free(&self, path: &Path, free: u64) {
        let used = self.used_bytes(path);
        self.resize_disk(path, (used + free).next_multiple_of(4096));
    }
}

impl Drop for MountNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A namespace for a test that needs one, or `None` (after saying why) when
/// this machine cannot make one and the run does not demand it. Runs that
/// must not skip (`scripts/test.sh` as root) set `PUSHGATE_TEST_NAMESPACES=required`.
pub fn namespace_or_skip(test: &str) -> Option<MountNamespace> {
    match MountNamespace::new() {
        Ok(ns) => Some(ns),
        Err(Unavailable(why)) => {
            if std::env::var("PUSHGATE_TEST_NAMESPACES").as_deref() == Ok("required") {
                panic!("{test}: needs a private mount namespace: {why}");
            }
            eprintln!("SKIPPED {test}: needs a private mount namespace (run as root): {why}");
            None
        }
    }
}
