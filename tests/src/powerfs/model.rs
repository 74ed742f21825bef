//! The power-loss file system's state, as a pure in-memory model (no FUSE,
//! no I/O), so its rules are unit-tested on their own.
//!
//! Every inode has a *current* state (what the running process sees) and a
//! *durable* state (what a disk would hold after losing its write cache):
//! - a file's bytes and size become durable on `fsync`/`fdatasync` of that
//!   file ([`Model::fsync`]), and only then;
//! - a directory's entries (create, mkdir, rename, unlink, rmdir) become
//!   durable on `fsync` of that directory ([`Model::fsync_dir`]), and only
//!   then; a rename across directories changes two entry sets, each made
//!   durable (or not) by its own directory's sync;
//! - [`Model::power_loss`] resets every directory to its durable entries and
//!   every file to its durable bytes, and drops inodes no durable entry
//!   reaches from the root.
//!
//! A failed `fsync` (an injected fault) behaves like Linux: the bytes written
//! since the last successful sync stay readable but are never written, so a
//! later successful `fsync` does not make them durable.
//!
//! Power can also be cut at a chosen *moment* ([`CutTrigger`]): the durable
//! state is frozen when that mutating operation arrives (before it takes
//! effect); the process keeps running on the current state, and the next
//! [`Model::power_loss`] restores the frozen one. Inode numbers are never
//! reused within one model.
//!
//! Not thread-safe on its own: the FUSE layer owns it behind a `Mutex`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// An inode number.
pub type Ino = u64;
/// The root directory's inode.
pub const ROOT: Ino = 1;

/// Why an operation failed (mapped to an errno by the FUSE layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// ENOENT.
    NotFound,
    /// EEXIST.
    Exists,
    /// ENOTDIR.
    NotDir,
    /// EISDIR.
    IsDir,
    /// ENOTEMPTY.
    NotEmpty,
    /// EOPNOTSUPP.
    Unsupported,
    /// EIO (an injected fsync failure).
    Io,
    /// EINVAL.
    Invalid,
}

/// Result of a model operation.
pub type FsResult<T> = Result<T, FsError>;

/// The mutating operations, counted for [`CutTrigger`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `pwrite`.
    Write,
    /// `ftruncate` / `truncate`.
    SetLen,
    /// `fallocate`.
    Fallocate,
    /// A new file.
    Create,
    /// A new directory.
    Mkdir,
    /// `unlink`.
    Unlink,
    /// `rmdir`.
    Rmdir,
    /// `rename`.
    Rename,
    /// `fsync`/`fdatasync` of a file.
    Fsync,
    /// `fsync` of a directory.
    FsyncDir,
}

/// When to cut the power: the first mutating operation matching `op` (any
/// when `None`) on a path containing `path_contains` (any when `None`)
/// starts a count, and the durable state is frozen just before the
/// `then_ops`-th operation after it (0: before the matching one itself).
#[derive(Debug, Clone, Default)]
pub struct CutTrigger {
    /// Which kind of operation arms the cut.
    pub op: Option<Op>,
    /// A substring of its path (`old -> new` for a rename).
    pub path_contains: Option<String>,
    /// How many further mutating operations still happen before the cut.
    pub then_ops: u64,
    /// Freeze the *current* state instead of the durable one: a process
    /// crash at that instant (the kernel keeps what was written, synced or
    /// not), with nothing after it.
    pub crash: bool,
}

/// Fail the next `count` file or directory fsyncs on paths containing any
/// of `paths` (every path when empty) with EIO.
#[derive(Debug, Clone, Default)]
pub struct FsyncFault {
    /// Substrings of the synced paths that fail.
    pub paths: Vec<String>,
    /// How many fsyncs still fail (`u64::MAX`: all).
    pub count: u64,
}

/// Counters over the model's life (across power losses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Mutating operations.
    pub ops: u64,
    /// Successful file fsyncs.
    pub fsyncs: u64,
    /// Successful directory fsyncs.
    pub dir_syncs: u64,
    /// Fsyncs failed on purpose.
    pub failed_fsyncs: u64,
    /// Power losses applied.
    pub power_losses: u64,
}

/// What `stat` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The inode.
    pub ino: Ino,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Bytes (files); entries (directories).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Last data change.
    pub mtime: SystemTime,
}

/// A file's contents: `bytes`, then zeros up to `size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileData {
    /// The written prefix (never longer than `size`).
    bytes: Vec<u8>,
    /// The file length.
    size: u64,
}

impl FileData {
    fn set_len(&mut self, size: u64) {
        self.bytes.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        self.size = size;
    }

    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = vec![0; end.saturating_sub(offset) as usize];
        let (start, stop) = (offset as usize, (end as usize).min(self.bytes.len()));
        if start < stop {
            out[..stop - start].copy_from_slice(&self.bytes[start..stop]);
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (start, end) = (offset as usize, offset as usize + data.len());
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[start..end].copy_from_slice(data);
        self.size = self.size.max(end as u64);
    }
}

/// Directory entries: name → inode.
type Entries = BTreeMap<OsString, Ino>;

#[derive(Debug, Clone)]
enum Body {
    File {
        current: FileData,
        durable: FileData,
        /// Bytes written since the last successful sync (start, end).
        dirty: Option<(u64, u64)>,
        /// Ranges whose writeback failed: never made durable by a later sync.
        lost: Vec<(u64, u64)>,
    },
    Dir {
        current: Entries,
        durable: Entries,
    },
}

#[derive(Debug, Clone)]
struct Node {
    body: Body,
    perm: u16,
    mtime: SystemTime,
    /// The parent and name it was last linked under (for paths in faults).
    link: (Ino, OsString),
    /// Open handles (an unlinked file stays readable while open).
    open: u32,
}

/// The durable state at one instant.
#[derive(Debug, Clone, Default)]
struct Image {
    files: HashMap<Ino, (FileData, u16)>,
    dirs: HashMap<Ino, (Entries, u16)>,
}

/// The file system: see the module doc.
#[derive(Debug)]
pub struct Model {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    /// The durable state frozen by a cut, restored by the next power loss.
    frozen: Option<Image>,
    /// Set when the power was cut (readable without the model's lock).
    cut: Arc<AtomicBool>,
    trigger: Option<CutTrigger>,
    /// Operations left before the armed cut, once its trigger matched.
    countdown: Option<u64>,
    /// Installed (instead of a cut) when the armed trigger fires.
    fault_on_trigger: Option<FsyncFault>,
    fsync_fault: Option<FsyncFault>,
    fallocate_unsupported: bool,
    stats: Stats,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// An empty file system (just the root).
    pub fn new() -> Self {
        let root = Node {
            body: Body::Dir { current: Entries::new(), durable: Entries::new() },
            perm: 0o755,
            mtime: SystemTime::now(),
            link: (ROOT, OsString::new()),
            open: 0,
        };
        Self {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            frozen: None,
            cut: Arc::new(AtomicBool::new(false)),
            trigger: None,
            countdown: None,
            fault_on_trigger: None,
            fsync_fault: None,
            fallocate_unsupported: false,
            stats: Stats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The path of `ino` under the root, from the links it was created or
    /// renamed under (`/a/b`).
    pub fn path(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        for _ in 0..64 {
            let Some(node) = self.nodes.get(&at) else { break };
            if at == ROOT {
                break;
            }
            parts.push(node.link.1.to_string_lossy().into_owned());
            at = node.link.0;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn child_path(&self, parent: Ino, name: &OsStr) -> String {
        let p = self.path(parent);
        format!("{}/{}", p.trim_end_matches('/'), name.to_string_lossy())
    }

    fn node(&self, ino: Ino) -> FsResult<&Node> {
        self.nodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn node_mut(&mut self, ino: Ino) -> FsResult<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn entries(&self, dir: Ino) -> FsResult<&Entries> {
        match &self.node(dir)?.body {
            Body::Dir { current, .. } => Ok(current),
            Body::File { .. } => Err(FsError::NotDir),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> FsResult<&mut Entries> {
        match &mut self.node_mut(dir)?.body {
            Body::Dir { current, .. } => Ok(current),
            Body::File { .. } => Err(FsError::NotDir),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> FsResult<&mut FileData> {
        match &mut self.node_mut(ino)?.body {
            Body::File { current, .. } => Ok(current),
            Body::Dir { .. } => Err(FsError::IsDir),
        }
    }

    /// `stat` of an inode.
    pub fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let node = self.node(ino)?;
        let (is_dir, size) = match &node.body {
            Body::File { current, .. } => (false, current.size),
            Body::Dir { current, .. } => (true, current.len() as u64),
        };
        Ok(Attr { ino, is_dir, size, perm: node.perm, mtime: node.mtime })
    }

    /// The inode named `name` in `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        self.getattr(ino)
    }

    /// The entries of a directory, with whether each is a directory.
    pub fn readdir(&self, dir: Ino) -> FsResult<Vec<(Ino, bool, OsString)>> {
        let entries = self.entries(dir)?;
        Ok(entries
            .iter()
            .map(|(name, ino)| (*ino, matches!(self.nodes[ino].body, Body::Dir { .. }), name.clone()))
            .collect())
    }

    fn add(&mut self, parent: Ino, name: &OsStr, body: Body, perm: u16) -> FsResult<Attr> {
        if self.entries(parent)?.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Node { body, perm, mtime: SystemTime::now(), link: (parent, name.to_owned()), open: 0 };
        self.nodes.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.getattr(ino)
    }

    /// Creates an empty file (its name is not durable until `parent` is synced).
    pub fn create(&mut self, parent: Ino, name: &OsStr, perm: u16) -> FsResult<Attr> {
        self.step(Op::Create, |m| m.child_path(parent, name));
        let body = Body::File {
            current: FileData::default(),
            durable: FileData::default(),
            dirty: None,
            lost: vec![],
        };
        self.add(parent, name, body, perm)
    }

    /// Creates an empty directory.
    pub fn mkdir(&mut self, parent: Ino, name: &OsStr, perm: u16) -> FsResult<Attr> {
        self.step(Op::Mkdir, |m| m.child_path(parent, name));
        self.add(parent, name, Body::Dir { current: Entries::new(), durable: Entries::new() }, perm)
    }

    /// Removes a file's name.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.step(Op::Unlink, |m| m.child_path(parent, name));
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        if matches!(self.node(ino)?.body, Body::Dir { .. }) {
            return Err(FsError::IsDir);
        }
        self.entries_mut(parent)?.remove(name);
        Ok(())
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.step(Op::Rmdir, |m| m.child_path(parent, name));
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        if !self.entries(ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.entries_mut(parent)?.remove(name);
        Ok(())
    }

    /// Renames, replacing a file or an empty directory of the same kind.
    pub fn rename(&mut self, parent: Ino, name: &OsStr, new_parent: Ino, new_name: &OsStr) -> FsResult<()> {
        self.step(Op::Rename, |m| {
            format!("{} -> {}", m.child_path(parent, name), m.child_path(new_parent, new_name))
        });
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        self.entries(new_parent)?;
        let is_dir = matches!(self.node(ino)?.body, Body::Dir { .. });
        if let Some(&old) = self.entries(new_parent)?.get(new_name) {
            if old == ino {
                return Ok(());
            }
            match (is_dir, self.entries(old)) {
                (true, Ok(e)) if !e.is_empty() => return Err(FsError::NotEmpty),
                (true, Err(_)) => return Err(FsError::NotDir),
                (false, Ok(_)) => return Err(FsError::IsDir),
                _ => {}
            }
        }
        if is_dir && self.is_ancestor(ino, new_parent) {
            return Err(FsError::Invalid);
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?.insert(new_name.to_owned(), ino);
        self.node_mut(ino)?.link = (new_parent, new_name.to_owned());
        Ok(())
    }

    fn is_ancestor(&self, dir: Ino, mut ino: Ino) -> bool {
        for _ in 0..64 {
            if ino == dir {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            ino = self.nodes.get(&ino).map_or(ROOT, |n| n.link.0);
        }
        false
    }

    /// Sets the permission bits.
    pub fn set_perm(&mut self, ino: Ino, perm: u16) -> FsResult<Attr> {
        self.node_mut(ino)?.perm = perm;
        self.getattr(ino)
    }

    /// Truncates or extends a file (zeros).
    pub fn set_len(&mut self, ino: Ino, size: u64) -> FsResult<Attr> {
        self.step(Op::SetLen, |m| m.path(ino));
        let file = self.file_mut(ino)?;
        let old = file.size;
        file.set_len(size);
        self.touch(ino, size.min(old), size.max(old))?;
        self.getattr(ino)
    }

    /// Bytes `offset..offset + len` (short at the end of the file).
    pub fn read(&self, ino: Ino, offset: u64, len: usize) -> FsResult<Vec<u8>> {
        match &self.node(ino)?.body {
            Body::File { current, .. } => Ok(current.read(offset, len)),
            Body::Dir { .. } => Err(FsError::IsDir),
        }
    }

    /// Writes `data` at `offset`, extending the file as needed.
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> FsResult<usize> {
        self.step(Op::Write, |m| m.path(ino));
        self.file_mut(ino)?.write(offset, data);
        self.touch(ino, offset, offset + data.len() as u64)?;
        Ok(data.len())
    }

    /// `fallocate`: mode 0 extends the size, `FALLOC_FL_KEEP_SIZE` (1)
    /// changes nothing visible; other modes are unsupported.
    pub fn fallocate(&mut self, ino: Ino, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        self.step(Op::Fallocate, |m| m.path(ino));
        if self.fallocate_unsupported || (mode != 0 && mode != 1) {
            return Err(FsError::Unsupported);
        }
        let file = self.file_mut(ino)?;
        let end = offset.saturating_add(len);
        if mode == 0 && end > file.size {
            let old = file.size;
            file.size = end;
            self.touch(ino, old, end)?;
        }
        Ok(())
    }

    /// Records a change of `start..end` (dirty range, mtime).
    fn touch(&mut self, ino: Ino, start: u64, end: u64) -> FsResult<()> {
        let node = self.node_mut(ino)?;
        node.mtime = SystemTime::now();
        if let Body::File { dirty, .. } = &mut node.body {
            let (a, b) = dirty.unwrap_or((start, end));
            *dirty = Some((a.min(start), b.max(end)));
        }
        Ok(())
    }

    /// An open handle on `ino` (keeps an unlinked file readable).
    pub fn open(&mut self, ino: Ino) -> FsResult<()> {
        self.node_mut(ino)?.open += 1;
        Ok(())
    }

    /// A closed handle.
    pub fn release(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open = node.open.saturating_sub(1);
            if node.open == 0 {
                self.collect_garbage();
            }
        }
    }
}

mod durability;

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
