//! A disk that loses power: a FUSE filesystem, served by the test process,
//! that keeps in memory what the processes on it wrote and, apart from that,
//! what they made durable. Cutting the power unmounts it, forgets what was
//! not synced and mounts it again, as a machine that lost power and booted
//! finds its disk.
//!
//! What survives is no more than POSIX promises:
//! * a file's contents (and size) as of its last `fsync`/`fdatasync`, plus
//!   any of the writes after it, each whole, torn (its first sectors only)
//!   or not at all, as a disk that wrote some of its queue when the power
//!   went;
//! * a directory's entries (creations, renames, removals) as of its last
//!   `fsync` on the directory: a file created, written and synced whose
//!   directory was not synced since is gone, and a rename not followed by a
//!   sync of its directory is undone.
//!
//! Real filesystems often keep more (ext4 commits metadata in order), so a
//! program that keeps every acknowledged write here should keep it on them.
//! Mounting needs root and `/dev/fuse`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// No caching in the kernel: every lookup and attribute comes from here.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

enum Contents {
    File {
        data: Vec<u8>,
        synced: Vec<u8>,
        /// Changes since the last sync, in order: what the disk may or may
        /// not have written when the power goes.
        pending: Vec<Change>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        synced: BTreeMap<OsString, u64>,
    },
}

impl Contents {
    fn empty_file() -> Contents {
        Contents::File {
            data: Vec::new(),
            synced: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn empty_dir() -> Contents {
        Contents::Dir {
            entries: BTreeMap::new(),
            synced: BTreeMap::new(),
        }
    }
}

/// A change to a file's contents that was not synced yet.
enum Change {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

impl Change {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Change::Write { offset, bytes } => {
                let end = offset + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*offset..end].copy_from_slice(bytes);
            }
            Change::SetLen(len) => data.resize(*len, 0),
        }
    }
}

/// The unit a disk writes whole: a write torn by a power cut keeps a
/// number of whole sectors.
const SECTOR: usize = 512;

struct Node {
    contents: Contents,
    perm: u16,
    mtime: SystemTime,
}

/// What a power cut forgot.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lost {
    /// Files whose contents differ from what was last written to them.
    pub files_rolled_back: usize,
    /// Unsynced writes (and truncations) the disk had not made, made in
    /// part (torn at a sector boundary), and made in full.
    pub changes_dropped: usize,
    pub changes_torn: usize,
    pub changes_kept: usize,
    /// Directories whose entries went back to their last sync.
    pub directories_rolled_back: usize,
}

impl std::ops::AddAssign for Lost {
    fn add_assign(&mut self, other: Lost) {
        self.files_rolled_back += other.files_rolled_back;
        self.directories_rolled_back += other.directories_rolled_back;
        self.changes_dropped += other.changes_dropped;
        self.changes_torn += other.changes_torn;
        self.changes_kept += other.changes_kept;
    }
}

struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Calls to `fsync`/`fdatasync` on files, for the test to see that the
    /// program on the disk syncs at all.
    file_syncs: u64,
}

impl Disk {
    fn new() -> Disk {
        let root = Node {
            contents: Contents::empty_dir(),
            perm: 0o755,
            mtime: SystemTime::now(),
        };
        Disk {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            file_syncs: 0,
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        let (kind, size, nlink) = match &node.contents {
            Contents::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Contents::Dir { .. } => (FileType::Directory, 0, 2),
        };
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.perm,
            nlink,
            uid,
            gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir).map(|n| &mut n.contents) {
            Some(Contents::Dir { entries, .. }) => Ok(entries),
            Some(Contents::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&mut self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries_mut(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn data(&self, ino: u64) -> Result<&[u8], Errno> {
        match self.nodes.get(&ino).map(|n| &n.contents) {
            Some(Contents::File { data, .. }) => Ok(data),
            Some(Contents::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// Changes a file's contents now; the change is durable at the next sync.
    fn change(&mut self, ino: u64, change: Change) -> Result<(), Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        match &mut node.contents {
            Contents::File { data, pending, .. } => {
                change.apply(data);
                pending.push(change);
                node.mtime = SystemTime::now();
                Ok(())
            }
            Contents::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    fn is_empty_dir(&self, ino: u64) -> bool {
        matches!(self.nodes.get(&ino).map(|n| &n.contents), Some(Contents::Dir { entries, .. }) if entries.is_empty())
    }

    fn make(&mut self, parent: u64, name: &OsStr, contents: Contents, mode: u32) -> Result<FileAttr, Errno> {
        if self.entries_mut(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Node {
            contents,
            perm: (mode & 0o7777) as u16,
            mtime: SystemTime::now(),
        };
        self.nodes.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.attr(ino)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let is_dir = matches!(self.nodes[&ino].contents, Contents::Dir { .. });
        match (dir, is_dir) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if !self.is_empty_dir(ino) => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        // The node itself stays: a synced entry may still name it.
        self.entries_mut(parent)?.remove(name);
        Ok(())
    }

    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.contents) {
            Some(Contents::File { data, synced, pending }) => {
                synced.clone_from(data);
                pending.clear();
                self.file_syncs += 1;
            }
            Some(Contents::Dir { entries, synced }) => synced.clone_from(entries),
            None => return Err(Errno::ENOENT),
        }
        Ok(())
    }

    /// Every file keeps what was synced and, of the changes after that, a
    /// random choice (`keep` of them, in order; a write may be torn, keeping
    /// only its first sectors); directories go back to their last sync;
    /// nodes no synced entry reaches are gone.
    fn cut_power(&mut self, keep: f64) -> Lost {
        let mut rng = rand::thread_rng();
        let mut lost = Lost::default();
        for node in self.nodes.values_mut() {
            match &mut node.contents {
                Contents::File { data, synced, pending } => {
                    let mut after = synced.clone();
                    for change in pending.drain(..) {
                        if !rng.gen_bool(keep) {
                            lost.changes_dropped += 1;
                            continue;
                        }
                        match change {
                            // A write that crosses a sector boundary may stop at any
                            // of them: its first sectors are written, the rest not.
                            Change::Write { offset, bytes }
                                if (offset / SECTOR + 1) * SECTOR < offset + bytes.len() && rng.gen_bool(0.5) =>
                            {
                                let boundaries = (offset / SECTOR + 1)..(offset + bytes.len()).div_ceil(SECTOR);
                                let cut = rng.gen_range(boundaries) * SECTOR;
                                let torn = Change::Write {
                                    offset,
                                    bytes: bytes[..cut - offset].to_vec(),
                                };
                                torn.apply(&mut after);
                                lost.changes_torn += 1;
                            }
                            change => {
                                change.apply(&mut after);
                                lost.changes_kept += 1;
                            }
                        }
                    }
                    if *data != after {
                        lost.files_rolled_back += 1;
                    }
                    *data = after.clone();
                    *synced = after;
                }
                Contents::Dir { entries, synced } => {
                    if entries != synced {
                        lost.directories_rolled_back += 1;
                        entries.clone_from(synced);
                    }
                }
            }
        }
        let mut reachable = HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if let Some(Contents::Dir { entries, .. }) = self.nodes.get(&ino).map(|n| &n.contents) {
                for child in entries.values() {
                    if reachable.insert(*child) {
                        todo.push(*child);
                    }
                }
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
        lost
    }
}

/// The FUSE side: every call locks the one `Disk`.
struct Served(Arc<Mutex<Disk>>);

impl Served {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Filesystem for Served {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut disk = self.disk();
        match disk.lookup(parent.0, name).and_then(|ino| disk.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        let result = (|| {
            if let Some(size) = size {
                disk.change(ino.0, Change::SetLen(size as usize))?;
            }
            let node = disk.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            if let Some(mode) = mode {
                node.perm = (mode & 0o7777) as u16;
            }
            match mtime {
                Some(TimeOrNow::SpecificTime(t)) => node.mtime = t,
                Some(TimeOrNow::Now) => node.mtime = SystemTime::now(),
                None => {}
            }
            disk.attr(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let file = Contents::empty_file();
        match self.disk().make(parent.0, name, file, mode & !umask) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let dir = Contents::empty_dir();
        match self.disk().make(parent.0, name, dir, mode & !umask) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.disk().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.disk().remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        let result = (|| {
            let ino = disk.lookup(parent.0, name)?;
            let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
                return Err(Errno::EINVAL);
            }
            if let Ok(existing) = disk.lookup(newparent.0, newname) {
                if noreplace {
                    return Err(Errno::EEXIST);
                }
                let replaced_is_dir = matches!(disk.nodes[&existing].contents, Contents::Dir { .. });
                if replaced_is_dir && !disk.is_empty_dir(existing) {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            disk.entries_mut(parent.0)?.remove(name);
            disk.entries_mut(newparent.0)?.insert(newname.to_owned(), ino);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let disk = self.disk();
        match disk.data(ino.0) {
            Ok(data) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let change = Change::Write {
            offset: offset as usize,
            bytes: bytes.to_vec(),
        };
        match self.disk().change(ino.0, change) {
            Ok(()) => reply.written(bytes.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.disk().sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.disk().sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut disk = self.disk();
        let names: Vec<(u64, OsString)> = match disk.entries_mut(ino.0) {
            Ok(entries) => entries.iter().map(|(name, child)| (*child, name.clone())).collect(),
            Err(e) => return reply.error(e),
        };
        let listing: Vec<(u64, FileType, OsString)> = names
            .into_iter()
            .map(|(child, name)| {
                let kind = match disk.nodes.get(&child).map(|n| &n.contents) {
                    Some(Contents::Dir { .. }) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                (child, kind, name)
            })
            .collect();
        let dots = [
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ];
        for (i, (child, kind, name)) in dots.into_iter().chain(listing).enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room: this disk tests power, not space.
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let file = Contents::empty_file();
        match self.disk().make(parent.0, name, file, mode & !umask) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut disk = self.disk();
        let result = disk.data(ino.0).map(|data| data.len()).and_then(|len| {
            let end = (offset + length) as usize;
            if len < end {
                disk.change(ino.0, Change::SetLen(end))
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted disk that can lose power.
pub struct PowerLossDisk {
    disk: Arc<Mutex<Disk>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

/// Why this machine cannot mount one.
pub struct Unavailable(pub String);

impl PowerLossDisk {
    /// An empty disk mounted at `mountpoint` (an existing, empty directory).
    pub fn mount(mountpoint: &Path) -> Result<PowerLossDisk, Unavailable> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Unavailable("mounting a FUSE filesystem here needs root".into()));
        }
        if !Path::new("/dev/fuse").exists() {
            return Err(Unavailable("no /dev/fuse".into()));
        }
        let mut disk = PowerLossDisk {
            disk: Arc::new(Mutex::new(Disk::new())),
            mountpoint: mountpoint.to_owned(),
            session: None,
        };
        disk.attach()
            .map_err(|e| Unavailable(format!("mounting FUSE at {}: {e}", mountpoint.display())))?;
        Ok(disk)
    }

    fn attach(&mut self) -> io::Result<()> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("pushgate-power-loss".into()),
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount(Served(self.disk.clone()), &self.mountpoint, &config)?;
        self.session = Some(session);
        Ok(())
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// `fsync`/`fdatasync` calls on files so far.
    pub fn file_syncs(&self) -> u64 {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).file_syncs
    }

    /// Cuts the power: unmounts (every process using the disk must have
    /// exited: kill them first), forgets what was not synced and mounts the
    /// disk again. Of the writes after a file's last sync, each was made
    /// with probability `keep` (in part, when torn): 0.0 forgets them all.
    pub fn cut_power(&mut self, keep: f64) -> Lost {
        if let Some(session) = self.session.take() {
            session
                .umount_and_join()
                .expect("unmount the power-loss disk (is a process still using it?)");
        }
        let lost = self.disk.lock().unwrap_or_else(|p| p.into_inner()).cut_power(keep);
        self.attach().expect("mount the power-loss disk again");
        lost
    }
}

impl Drop for PowerLossDisk {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

/// A disk for a test that needs one, or `None` (after saying why) when this
/// machine cannot mount one and the run does not demand it
/// (`PUSHGATE_TEST_FUSE=required` demands it; `scripts/test.sh` sets it as
/// root on a machine with `/dev/fuse`).
pub fn power_loss_disk_or_skip(test: &str, mountpoint: &Path) -> Option<PowerLossDisk> {
    match PowerLossDisk::mount(mountpoint) {
        Ok(disk) => Some(disk),
        Err(Unavailable(why)) => {
            if std::env::var("PUSHGATE_TEST_FUSE").as_deref() == Ok("required") {
                panic!("{test}: needs a FUSE mount: {why}");
            }
            eprintln!("SKIPPED {test}: needs a FUSE mount (run as root): {why}");
            None
        }
    }
}
