//! Directories that a power cut cannot take away.
//!
//! Creating a directory changes its parent. Until the parent is synced, a
//! power cut may undo that change, and with it everything written below the
//! new directory, however well each file there was synced (POSIX promises
//! nothing more; ext4 usually keeps it, a strict filesystem need not). So
//! the data directory and the directories in it are created here: each
//! missing component is made and its parent synced.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// `std::fs::create_dir_all`, then syncs the parent of every directory it
/// made and of `path` itself (once per start: a directory made by a run that
/// stopped before its sync is made durable now).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at {
        if dir.as_os_str().is_empty() || dir.is_dir() {
            break;
        }
        missing.push(dir.to_owned());
        at = dir.parent();
    }
    std::fs::create_dir_all(path)?;
    let parents: Vec<PathBuf> = if missing.is_empty() {
        vec![parent(path)]
    } else {
        missing.iter().map(|dir| parent(dir)).collect()
    };
    for dir in parents {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io::Error::new(e.kind(), format!("syncing {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// The directory that holds `path` (`.` for a relative name of one component).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_every_missing_component_and_keeps_existing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        std::fs::write(deep.join("f"), b"kept").unwrap();
        create_dir_all(&deep).unwrap();
        assert_eq!(std::fs::read(deep.join("f")).unwrap(), b"kept");
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(create_dir_all(&file.join("d")).is_err());
    }

    #[test]
    fn a_relative_name_syncs_the_working_directory() {
        assert_eq!(parent(Path::new("data")), PathBuf::from("."));
        assert_eq!(parent(Path::new("/")), PathBuf::from("."));
        assert_eq!(parent(Path::new("x/data")), PathBuf::from("x"));
    }
}
