//! One test per rule of the model (see `model.rs`'s module doc).

use super::*;

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A file `f` with durable name and contents `data`.
fn durable_file(m: &mut Model, data: &[u8]) -> Ino {
    let f = m.create(ROOT, name("f"), 0o644).unwrap().ino;
    m.write(f, 0, data).unwrap();
    m.fsync(f).unwrap();
    m.fsync_dir(ROOT).unwrap();
    f
}

#[test]
fn unsynced_bytes_and_size_are_lost_synced_ones_kept() {
    let mut m = Model::new();
    let f = durable_file(&mut m, b"hello");
    m.write(f, 5, b" world").unwrap();
    m.set_len(f, 100).unwrap();
    assert_eq!(m.read(f, 0, 11).unwrap(), b"hello world");
    m.power_loss();
    let f = m.lookup(ROOT, name("f")).unwrap();
    assert_eq!(f.size, 5);
    assert_eq!(m.read(f.ino, 0, 100).unwrap(), b"hello");
    assert_eq!(m.stats().power_losses, 1);
}

#[test]
fn a_new_name_needs_its_directory_synced() {
    let mut m = Model::new();
    let d = m.mkdir(ROOT, name("d"), 0o755).unwrap().ino;
    m.fsync_dir(ROOT).unwrap();
    let f = m.create(d, name("x"), 0o644).unwrap().ino;
    m.write(f, 0, b"data").unwrap();
    m.fsync(f).unwrap(); // bytes durable, name not
    m.power_loss();
    let d = m.lookup(ROOT, name("d")).unwrap().ino;
    assert_eq!(m.lookup(d, name("x")), Err(FsError::NotFound));
    assert!(m.readdir(d).unwrap().is_empty());
}

#[test]
fn an_unsynced_mkdir_disappears_with_its_contents() {
    let mut m = Model::new();
    let d = m.mkdir(ROOT, name("d"), 0o755).unwrap().ino;
    let f = m.create(d, name("x"), 0o644).unwrap().ino;
    m.fsync(f).unwrap();
    m.fsync_dir(d).unwrap();
    m.power_loss();
    assert_eq!(m.lookup(ROOT, name("d")), Err(FsError::NotFound));
}

#[test]
fn unlink_and_rename_revert_per_directory() {
    let mut m = Model::new();
    let f = durable_file(&mut m, b"v1");
    let d = m.mkdir(ROOT, name("d"), 0o755).unwrap().ino;
    m.fsync_dir(ROOT).unwrap();
    m.rename(ROOT, name("f"), d, name("g")).unwrap();
    m.fsync_dir(d).unwrap(); // the new name durable, the removal of the old not
    m.power_loss();
    let d = m.lookup(ROOT, name("d")).unwrap().ino;
    assert_eq!(m.lookup(d, name("g")).unwrap().ino, f);
    assert_eq!(m.lookup(ROOT, name("f")).unwrap().ino, f, "still under its old name too");

    m.unlink(ROOT, name("f")).unwrap();
    m.power_loss();
    assert!(m.lookup(ROOT, name("f")).is_ok(), "an unsynced unlink is undone");
    m.unlink(ROOT, name("f")).unwrap();
    m.fsync_dir(ROOT).unwrap();
    m.power_loss();
    assert_eq!(m.lookup(ROOT, name("f")), Err(FsError::NotFound));
}

#[test]
fn rename_over_a_file_is_atomic_once_the_directory_is_synced() {
    let mut m = Model::new();
    durable_file(&mut m, b"old");
    let tmp = m.create(ROOT, name("f.tmp"), 0o644).unwrap().ino;
    m.write(tmp, 0, b"new").unwrap();
    m.fsync(tmp).unwrap();
    m.fsync_dir(ROOT).unwrap();
    m.rename(ROOT, name("f.tmp"), ROOT, name("f")).unwrap();
    m.power_loss();
    let f = m.lookup(ROOT, name("f")).unwrap().ino;
    assert_eq!(m.read(f, 0, 10).unwrap(), b"old", "without the directory sync: the old contents");
    assert_eq!(m.lookup(ROOT, name("f.tmp")).unwrap().ino, tmp);
    m.rename(ROOT, name("f.tmp"), ROOT, name("f")).unwrap();
    m.fsync_dir(ROOT).unwrap();
    m.power_loss();
    let f = m.lookup(ROOT, name("f")).unwrap().ino;
    assert_eq!(m.read(f, 0, 10).unwrap(), b"new");
    assert_eq!(m.lookup(ROOT, name("f.tmp")), Err(FsError::NotFound));
}

#[test]
fn a_cut_freezes_the_durable_state_at_its_moment() {
    let mut m = Model::new();
    let f = durable_file(&mut m, b"a");
    m.arm_cut(CutTrigger {
        op: Some(Op::Fsync),
        path_contains: Some("/f".into()),
        then_ops: 0,
        crash: false,
    });
    let flag = m.cut_flag();
    m.write(f, 1, b"b").unwrap();
    assert!(!flag.load(Ordering::SeqCst));
    m.fsync(f).unwrap(); // the cut happens before this sync takes effect
    assert!(flag.load(Ordering::SeqCst));
    m.write(f, 2, b"c").unwrap();
    m.fsync(f).unwrap();
    assert_eq!(m.read(f, 0, 10).unwrap(), b"abc", "the process still sees everything");
    m.power_loss();
    assert_eq!(m.read(f, 0, 10).unwrap(), b"a");
    assert!(!flag.load(Ordering::SeqCst));
}

#[test]
fn a_cut_can_wait_some_operations_after_its_trigger() {
    let mut m = Model::new();
    m.arm_cut(CutTrigger { op: Some(Op::Create), path_contains: None, then_ops: 3, crash: false });
    let f = m.create(ROOT, name("f"), 0o644).unwrap().ino; // the trigger, then 2 more ops happen
    m.write(f, 0, b"x").unwrap();
    m.fsync_dir(ROOT).unwrap();
    m.fsync(f).unwrap(); // cut before this one
    m.power_loss();
    let f = m.lookup(ROOT, name("f")).unwrap();
    assert_eq!(f.size, 0, "the name made it, the data did not");
}

#[test]
fn a_failed_fsync_loses_its_writes_for_good() {
    let mut m = Model::new();
    let f = durable_file(&mut m, b"aaaa");
    m.fail_fsyncs(Some(FsyncFault { paths: vec![], count: 1 }));
    m.write(f, 0, b"bb").unwrap();
    assert_eq!(m.fsync(f), Err(FsError::Io));
    m.write(f, 4, b"cc").unwrap();
    m.fsync(f).unwrap(); // succeeds, but the failed range was never written
    assert_eq!(m.read(f, 0, 10).unwrap(), b"bbaacc");
    m.power_loss();
    assert_eq!(m.read(f, 0, 10).unwrap(), b"aaaacc");
    assert_eq!(m.stats().failed_fsyncs, 1);
}

#[test]
fn fsync_faults_match_paths_and_directories() {
    let mut m = Model::new();
    let d = m.mkdir(ROOT, name("groups"), 0o755).unwrap().ino;
    let f = m.create(ROOT, name("f"), 0o644).unwrap().ino;
    m.fail_fsyncs(Some(FsyncFault { paths: vec!["groups".into()], count: u64::MAX }));
    m.fsync(f).unwrap();
    assert_eq!(m.fsync_dir(d), Err(FsError::Io));
    assert_eq!(m.fsync_dir(d), Err(FsError::Io));
    m.fail_fsyncs(None);
    m.fsync_dir(d).unwrap();
}

#[test]
fn fallocate_extends_or_keeps_size_and_can_be_refused() {
    let mut m = Model::new();
    let f = durable_file(&mut m, b"ab");
    m.fallocate(f, 0, 4096, 0).unwrap();
    assert_eq!(m.getattr(f).unwrap().size, 4096);
    assert_eq!(m.read(f, 0, 4).unwrap(), b"ab\0\0");
    m.fallocate(f, 0, 1 << 20, 1).unwrap();
    assert_eq!(m.getattr(f).unwrap().size, 4096, "KEEP_SIZE");
    assert_eq!(m.fallocate(f, 0, 10, 3), Err(FsError::Unsupported), "punch hole");
    m.set_fallocate_unsupported(true);
    assert_eq!(m.fallocate(f, 0, 10, 0), Err(FsError::Unsupported));
    m.power_loss();
    assert_eq!(m.lookup(ROOT, name("f")).unwrap().size, 2, "unsynced growth lost");
}

#[test]
fn truncate_then_extend_reads_zeros() {
    let mut m = Model::new();
    let f = durable_file(&mut m, b"abcdef");
    m.set_len(f, 2).unwrap();
    m.set_len(f, 4).unwrap();
    assert_eq!(m.read(f, 0, 10).unwrap(), b"ab\0\0");
    m.fsync(f).unwrap();
    m.power_loss();
    assert_eq!(m.read(f, 0, 10).unwrap(), b"ab\0\0");
}

#[test]
fn unlinked_files_live_while_open_and_are_collected_after() {
    let mut m = Model::new();
    let f = durable_file(&mut m, b"x");
    m.open(f).unwrap();
    m.unlink(ROOT, name("f")).unwrap();
    m.fsync_dir(ROOT).unwrap();
    assert_eq!(m.read(f, 0, 1).unwrap(), b"x");
    m.release(f);
    assert_eq!(m.getattr(f), Err(FsError::NotFound));
}

#[test]
fn directory_rules() {
    let mut m = Model::new();
    let d = m.mkdir(ROOT, name("d"), 0o755).unwrap().ino;
    m.create(d, name("x"), 0o644).unwrap();
    assert_eq!(m.rmdir(ROOT, name("d")), Err(FsError::NotEmpty));
    assert_eq!(m.unlink(ROOT, name("d")), Err(FsError::IsDir));
    assert_eq!(m.create(d, name("x"), 0o644), Err(FsError::Exists));
    assert_eq!(m.rename(ROOT, name("d"), d, name("inside")), Err(FsError::Invalid));
    m.unlink(d, name("x")).unwrap();
    m.rmdir(ROOT, name("d")).unwrap();
    assert!(m.readdir(ROOT).unwrap().is_empty());
    assert_eq!(m.path(d), "/d");
}

#[test]
fn a_crash_cut_keeps_everything_written_before_its_moment() {
    let mut m = Model::new();
    m.arm_cut(CutTrigger { op: Some(Op::Rename), path_contains: None, then_ops: 0, crash: true });
    let f = m.create(ROOT, name("a"), 0o644).unwrap().ino;
    m.write(f, 0, b"unsynced").unwrap();
    m.rename(ROOT, name("a"), ROOT, name("b")).unwrap(); // the crash comes before this
    m.power_loss();
    let a = m.lookup(ROOT, name("a")).unwrap();
    assert_eq!(m.read(a.ino, 0, 100).unwrap(), b"unsynced");
    assert_eq!(m.lookup(ROOT, name("b")), Err(FsError::NotFound));
}

#[test]
fn a_fault_can_start_at_a_chosen_moment() {
    let mut m = Model::new();
    let f = durable_file(&mut m, b"a");
    let at_rename = CutTrigger { op: Some(Op::Rename), ..CutTrigger::default() };
    m.arm_fault(at_rename, FsyncFault { paths: vec![], count: 1 });
    m.fsync(f).unwrap();
    m.rename(ROOT, name("f"), ROOT, name("g")).unwrap();
    assert_eq!(m.fsync(f), Err(FsError::Io));
    m.fsync(f).unwrap();
    assert!(!m.cut_flag().load(Ordering::SeqCst), "a fault, not a cut");
}
