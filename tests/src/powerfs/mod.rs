//! A power-loss file system for tests: a FUSE mount whose contents keep
//! only what was fsynced (file bytes) and dir-synced (names) when the power
//! goes out, so a missing fsync in the broker fails a test.
//!
//! - `model.rs`: the rules (current vs durable state, cuts, faults), pure.
//! - `fuse.rs`: the kernel-facing `fuser::Filesystem` over the model.
//! - here: [`PowerFs`], the handle a test holds: mount, fault switches,
//!   stats, and [`PowerFs::power_loss_and_remount`].
//!
//! A power loss is: the caller kills every process using the mount, then
//! the model drops what was not durable, the file system is unmounted and
//! mounted again: a fresh mount has no page cache, so nothing lost can
//! still be served from memory. Unmounted on drop.
//!
//! Mounting needs `/dev/fuse` and root (or `fusermount3`); tests call
//! [`PowerFs::mount_or_skip`], which prints why it skipped.

mod fuse;
pub mod model;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{BackgroundSession, Config, MountOption};

pub use model::{CutTrigger, FsyncFault, Model, Op, Stats};

/// A mounted power-loss file system.
#[derive(Debug)]
pub struct PowerFs {
    /// Where it is mounted.
    mountpoint: PathBuf,
    /// The state, shared with the FUSE session.
    model: Arc<Mutex<Model>>,
    /// The running session, until unmounted.
    session: Option<BackgroundSession>,
    /// True once the power was cut (lock-free, for acknowledgement bookkeeping).
    cut: Arc<AtomicBool>,
}

impl PowerFs {
    /// Mounts an empty power-loss file system on the existing directory `dir`.
    ///
    /// # Errors
    /// When FUSE is unavailable or the mount fails.
    pub fn mount(dir: &Path) -> io::Result<Self> {
        let model = Model::new();
        let cut = model.cut_flag();
        let mut fs =
            Self { mountpoint: dir.to_owned(), model: Arc::new(Mutex::new(model)), session: None, cut };
        fs.session = Some(fs.spawn_session()?);
        Ok(fs)
    }

    /// Mounts on `dir`, or prints why this machine cannot and returns `None`
    /// (no `/dev/fuse`, not permitted). `test` names the caller in the line.
    pub fn mount_or_skip(dir: &Path, test: &str) -> Option<Self> {
        if !Path::new("/dev/fuse").exists() {
            return skip(test, "/dev/fuse is missing (FUSE unavailable on this machine)");
        }
        match Self::mount(dir) {
            Ok(fs) => {
                eprintln!("RUNNING {test} on the power-loss file system mounted at {}", dir.display());
                Some(fs)
            }
            Err(e) => skip(
                test,
                &format!("mounting FUSE failed: {e} (needs root, or fusermount3 from the fuse3 package)"),
            ),
        }
    }

    fn spawn_session(&self) -> io::Result<BackgroundSession> {
        let fs = fuse::PowerLossFs { model: Arc::clone(&self.model) };
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("sluice-powerfs".into()), MountOption::RW];
        fuser::spawn_mount(fs, &self.mountpoint, &config)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The power goes out and comes back: what was not durable (or what came
    /// after an armed cut) is gone, and the file system is mounted afresh.
    /// Every process using the mount must be dead already (else `EBUSY`).
    ///
    /// # Errors
    /// When unmounting or mounting again fails.
    pub fn power_loss_and_remount(&mut self) -> io::Result<()> {
        self.unmount()?;
        self.model().power_loss();
        self.session = Some(self.spawn_session()?);
        Ok(())
    }

    /// Unmounts (idempotent).
    ///
    /// # Errors
    /// When the kernel refuses (a process still uses the mount).
    pub fn unmount(&mut self) -> io::Result<()> {
        match self.session.take() {
            // The session's reader can end with ECONNABORTED instead of
            // ENODEV when the unmount aborts the FUSE connection under it
            // (seen under load in CI): the mount is gone either way.
            Some(session) => match session.umount_and_join() {
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    }

    /// Cuts the power now: later operations still work but will be lost.
    pub fn cut_now(&self) {
        self.model().cut_now();
    }

    /// Arms a cut at a chosen moment (see [`CutTrigger`]).
    pub fn arm_cut(&self, trigger: CutTrigger) {
        self.model().arm_cut(trigger);
    }

    /// Arms an fsync fault that starts at a chosen moment (see [`CutTrigger`]).
    pub fn arm_fault(&self, trigger: CutTrigger, fault: FsyncFault) {
        self.model().arm_fault(trigger, fault);
    }

    /// Whether the power has been cut since the last power loss: anything
    /// acknowledged while this is still false must survive it.
    pub fn cut_happened(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// The flag behind [`cut_happened`](Self::cut_happened), for other threads.
    pub fn cut_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cut)
    }

    /// Fails fsyncs with EIO (see [`FsyncFault`]); `None` heals.
    pub fn fail_fsyncs(&self, fault: Option<FsyncFault>) {
        self.model().fail_fsyncs(fault);
    }

    /// Makes `fallocate` fail with EOPNOTSUPP.
    pub fn set_fallocate_unsupported(&self, on: bool) {
        self.model().set_fallocate_unsupported(on);
    }

    /// Counters: operations, fsyncs, dir syncs, power losses.
    pub fn stats(&self) -> Stats {
        self.model().stats()
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("power-loss file system at {}: unmount failed: {e}", self.mountpoint.display());
        }
    }
}

/// Skips a power-loss test where FUSE is unavailable, saying why; under CI
/// (`CI` set, as `.ci/run` runs) a skip would hide that the durability
/// tests did not run, so it fails instead.
fn skip<T>(test: &str, why: &str) -> Option<T> {
    assert!(std::env::var_os("CI").is_none(), "{test} cannot run under CI: {why}");
    eprintln!("SKIPPED {test}: {why}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Files, names and renames through the real kernel path: what was
    /// synced survives a power loss, the rest does not.
    #[test]
    fn synced_survives_unsynced_does_not_through_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let Some(mut fs) = PowerFs::mount_or_skip(dir.path(), "powerfs kernel round trip") else { return };
        let root = fs.path().to_owned();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::File::open(&root).unwrap().sync_all().unwrap();
        let kept = std::fs::File::create(root.join("d/kept")).unwrap();
        kept.write_all_at(b"durable", 0).unwrap();
        kept.sync_data().unwrap();
        kept.write_all_at(b" and lost", 7).unwrap();
        std::fs::File::open(root.join("d")).unwrap().sync_all().unwrap();
        std::fs::write(root.join("d/lost"), b"x").unwrap();
        rustix::fs::fallocate(&kept, rustix::fs::FallocateFlags::empty(), 0, 1 << 16).unwrap();
        assert_eq!(kept.metadata().unwrap().len(), 1 << 16);
        drop(kept);
        let stats = fs.stats();
        assert!(stats.fsyncs >= 1 && stats.dir_syncs >= 2, "{stats:?}");
        fs.power_loss_and_remount().unwrap();
        assert_eq!(std::fs::read(root.join("d/kept")).unwrap(), b"durable");
        assert!(!root.join("d/lost").exists());
        assert_eq!(fs.stats().power_losses, 1);
    }

    /// The broker's own log (pwrite, fallocate, read-only shared map,
    /// fdatasync, segment rolls) on the mount: synced records survive, and
    /// injected faults reach it.
    #[test]
    fn the_broker_log_runs_on_it_and_faults_fire() {
        use sluice_broker::storage::{now_ms, DiskSpace, Log, LogConfig};
        let dir = tempfile::tempdir().unwrap();
        let Some(mut fs) = PowerFs::mount_or_skip(dir.path(), "powerfs broker log") else { return };
        let log_dir = fs.path().join("log");
        let config = LogConfig { segment_bytes: 16384, ..LogConfig::default() };
        let (log, _) = Log::open(&log_dir, config.clone(), DiskSpace::Real).unwrap();
        for i in 0..40 {
            log.append(&crate::batch(3, 200, i), now_ms()).unwrap();
        }
        log.sync_to(log.log_end_offset()).unwrap();
        let end = log.log_end_offset();
        assert!(log.read(0, 1 << 20).unwrap().len() > 600, "read through the map");
        log.append(&crate::batch(3, 200, 99), now_ms()).unwrap(); // not synced
        drop(log);
        fs.power_loss_and_remount().unwrap();
        let (log, _) = Log::open(&log_dir, config, DiskSpace::Real).unwrap();
        assert_eq!(log.log_end_offset(), end, "synced records kept, the unsynced batch gone");
        drop(log);

        let f = std::fs::File::create(fs.path().join("seg")).unwrap();
        fs.fail_fsyncs(Some(FsyncFault { paths: vec!["seg".into()], count: 1 }));
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(rustix::io::Errno::IO.raw_os_error()));
        f.sync_data().unwrap();
        fs.set_fallocate_unsupported(true);
        let err = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 1 << 20).unwrap_err();
        assert_eq!(err, rustix::io::Errno::OPNOTSUPP);
    }
}
