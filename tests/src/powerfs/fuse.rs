//! The FUSE face of the power-loss model: a [`fuser::Filesystem`] that
//! forwards every request to the shared [`Model`] and maps its errors to
//! errnos. Nothing here decides durability; `model.rs` does.
//!
//! Invariants that keep the kernel from hiding the model:
//! - attribute and entry TTLs are zero, no writeback cache, no
//!   `FOPEN_KEEP_CACHE`: the kernel asks for sizes and names every time
//!   and drops a file's page cache when it is opened;
//! - writes go through to the model at once (FUSE's default write-through),
//!   reads (`read(2)` and faults of a read-only shared map) come from it;
//! - after a power loss the file system is unmounted and mounted afresh, so
//!   no page cache survives into the next boot (see `mod.rs`).
//!
//! `flock` and POSIX locks are not forwarded (the kernel keeps them locally,
//! which is all the broker's `.lock` needs). Requests arrive on one session
//! thread; the model is locked per request.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, WriteFlags,
};

use super::model::{Attr, FsError, FsResult, Model};

/// No caching of names or attributes in the kernel.
const TTL: Duration = Duration::ZERO;

/// The file system served over FUSE.
#[derive(Debug)]
pub struct PowerLossFs {
    /// Shared with the test's handle (faults, power loss, stats).
    pub model: Arc<Mutex<Model>>,
}

fn errno(e: FsError) -> Errno {
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::Exists => Errno::EEXIST,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::IsDir => Errno::EISDIR,
        FsError::NotEmpty => Errno::ENOTEMPTY,
        FsError::Unsupported => Errno::EOPNOTSUPP,
        FsError::Io => Errno::EIO,
        FsError::Invalid => Errno::EINVAL,
    }
}

fn file_attr(a: &Attr, req: &Request) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: SystemTime::UNIX_EPOCH,
        kind: if a.is_dir { FileType::Directory } else { FileType::RegularFile },
        perm: a.perm,
        nlink: if a.is_dir { 2 } else { 1 },
        uid: req.uid(),
        gid: req.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl PowerLossFs {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(req: &Request, result: FsResult<Attr>, reply: ReplyEntry) {
        match result {
            Ok(a) => reply.entry(&TTL, &file_attr(&a, req), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn attr(req: &Request, result: FsResult<Attr>, reply: ReplyAttr) {
        match result {
            Ok(a) => reply.attr(&TTL, &file_attr(&a, req)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn empty(result: FsResult<()>, reply: ReplyEmpty) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// Permission bits of a `mode` after `umask`.
fn perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for PowerLossFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        Self::entry(req, self.model().lookup(parent.0, name), reply);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        Self::attr(req, self.model().getattr(ino.0), reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut m = self.model();
        let mut result = m.getattr(ino.0);
        if let Some(size) = size {
            result = result.and_then(|_| m.set_len(ino.0, size));
        }
        if let Some(mode) = mode {
            result = result.and_then(|_| m.set_perm(ino.0, perm(mode, 0)));
        }
        Self::attr(req, result, reply);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        Self::entry(req, self.model().mkdir(parent.0, name, perm(mode, umask)), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(self.model().unlink(parent.0, name), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(self.model().rmdir(parent.0, name), reply);
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
        let mut m = self.model();
        let result = if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            Err(FsError::Invalid)
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) && m.lookup(newparent.0, newname).is_ok() {
            Err(FsError::Exists)
        } else {
            m.rename(parent.0, name, newparent.0, newname)
        };
        Self::empty(result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().open(ino.0) {
            Ok(()) => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
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
        match self.model().read(ino.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.model().write(ino.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // close(2): nothing becomes durable
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.model().release(ino.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        Self::empty(self.model().fsync(ino.0), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().getattr(ino.0) {
            Ok(a) if a.is_dir => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.model().readdir(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        let dots = [(ino.0, true, ".".into()), (ino.0, true, "..".into())];
        for (i, (child, is_dir, name)) in dots.into_iter().chain(entries).enumerate().skip(offset as usize) {
            let kind = if is_dir { FileType::Directory } else { FileType::RegularFile };
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        Self::empty(self.model().fsync_dir(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 64 GiB, all free: the model lives in memory.
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut m = self.model();
        match m.create(parent.0, name, perm(mode, umask)).and_then(|a| m.open(a.ino).map(|()| a)) {
            Ok(a) => reply.created(
                &TTL,
                &file_attr(&a, req),
                Generation(0),
                FileHandle(a.ino),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
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
        Self::empty(self.model().fallocate(ino.0, offset, length, mode), reply);
    }
}
