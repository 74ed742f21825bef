//! The durability half of the [`Model`](super::Model): what fsyncs make
//! durable, injected faults, cuts at chosen moments, and the power loss
//! itself (see the parent module's doc for the rules).

use super::*;

impl Model {
    /// Arms a cut at a chosen moment (replacing any armed one).
    pub fn arm_cut(&mut self, trigger: CutTrigger) {
        self.trigger = Some(trigger);
        self.countdown = None;
        self.fault_on_trigger = None;
    }

    /// Arms `fault` to start failing fsyncs at the moment `trigger` names
    /// (its `crash` is ignored), instead of cutting the power there.
    pub fn arm_fault(&mut self, trigger: CutTrigger, fault: FsyncFault) {
        self.arm_cut(trigger);
        self.fault_on_trigger = Some(fault);
    }

    /// Cuts the power now: freezes the durable state (no-op if already cut).
    pub fn cut_now(&mut self) {
        self.freeze(false);
    }

    /// Freezes the durable state, or the current one for a `crash`.
    fn freeze(&mut self, crash: bool) {
        if self.frozen.is_none() {
            self.frozen = Some(self.image(crash));
            self.cut.store(true, Ordering::SeqCst);
        }
        self.trigger = None;
        self.countdown = None;
    }

    /// A flag that turns true when the power is cut (for acknowledgement
    /// bookkeeping: what was acknowledged before it must survive).
    pub fn cut_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cut)
    }

    /// Makes fsyncs fail with EIO (see [`FsyncFault`]); `None` heals.
    pub fn fail_fsyncs(&mut self, fault: Option<FsyncFault>) {
        self.fsync_fault = fault;
    }

    /// Makes `fallocate` answer EOPNOTSUPP (file systems without it).
    pub fn set_fallocate_unsupported(&mut self, on: bool) {
        self.fallocate_unsupported = on;
    }

    /// Counts a mutating operation and fires an armed cut. `path` is only
    /// computed when a trigger needs it.
    pub(super) fn step(&mut self, op: Op, path: impl FnOnce(&Self) -> String) {
        self.stats.ops += 1;
        if let Some(t) = &self.trigger {
            if self.countdown.is_none() {
                let matches = t.op.is_none_or(|o| o == op)
                    && t.path_contains.as_ref().is_none_or(|s| path(self).contains(s.as_str()));
                if matches {
                    self.countdown = Some(t.then_ops);
                }
            }
        }
        match self.countdown {
            Some(0) => match self.fault_on_trigger.take() {
                Some(fault) => {
                    self.fsync_fault = Some(fault);
                    self.trigger = None;
                    self.countdown = None;
                }
                None => {
                    let crash = self.trigger.as_ref().is_some_and(|t| t.crash);
                    self.freeze(crash);
                }
            },
            Some(n) => self.countdown = Some(n - 1),
            None => {}
        }
    }

    /// Whether an injected fault fails this sync of `ino` (consuming it).
    fn sync_fails(&mut self, ino: Ino) -> bool {
        let Some(fault) = &self.fsync_fault else { return false };
        if fault.count == 0 {
            return false;
        }
        if !fault.paths.is_empty() {
            let path = self.path(ino);
            if !fault.paths.iter().any(|s| path.contains(s.as_str())) {
                return false;
            }
        }
        if let Some(f) = &mut self.fsync_fault {
            f.count = f.count.saturating_sub(u64::from(f.count != u64::MAX));
        }
        self.stats.failed_fsyncs += 1;
        true
    }

    /// `fsync`/`fdatasync` of a file: its bytes and size become durable
    /// (except ranges whose earlier writeback failed). A directory's fsync
    /// goes to [`fsync_dir`](Self::fsync_dir).
    pub fn fsync(&mut self, ino: Ino) -> FsResult<()> {
        self.step(Op::Fsync, |m| m.path(ino));
        if matches!(self.node(ino)?.body, Body::Dir { .. }) {
            return self.sync_dir_entries(ino);
        }
        let fails = self.sync_fails(ino);
        let Body::File { current, durable, dirty, lost } = &mut self.node_mut(ino)?.body else {
            return Err(FsError::IsDir);
        };
        if fails {
            lost.extend(dirty.take());
            return Err(FsError::Io);
        }
        let old = std::mem::replace(durable, current.clone());
        for (a, b) in lost.drain(..) {
            let (a, b) = (a.min(durable.size), b.min(durable.size));
            let restore = old.read(a, (b - a) as usize);
            let zeros = vec![0; (b - a - restore.len() as u64) as usize];
            durable.write(a, &restore);
            durable.write(a + restore.len() as u64, &zeros);
        }
        *dirty = None;
        self.stats.fsyncs += 1;
        Ok(())
    }

    /// `fsync` of a directory: its entries become durable.
    pub fn fsync_dir(&mut self, ino: Ino) -> FsResult<()> {
        self.step(Op::FsyncDir, |m| m.path(ino));
        self.sync_dir_entries(ino)
    }

    fn sync_dir_entries(&mut self, ino: Ino) -> FsResult<()> {
        if self.sync_fails(ino) {
            return Err(FsError::Io);
        }
        let Body::Dir { current, durable } = &mut self.node_mut(ino)?.body else {
            return Err(FsError::NotDir);
        };
        *durable = current.clone();
        self.stats.dir_syncs += 1;
        self.collect_garbage();
        Ok(())
    }

    /// Drops inodes that no current or durable entry names and nobody has open.
    pub(super) fn collect_garbage(&mut self) {
        let mut named: HashSet<Ino> = HashSet::from([ROOT]);
        for node in self.nodes.values() {
            if let Body::Dir { current, durable } = &node.body {
                named.extend(current.values().chain(durable.values()));
            }
        }
        self.nodes.retain(|ino, node| node.open > 0 || named.contains(ino));
    }

    /// The durable state now, or the current one (`crash`).
    fn image(&self, crash: bool) -> Image {
        let mut image = Image::default();
        for (ino, node) in &self.nodes {
            match &node.body {
                Body::File { durable, current, .. } => {
                    let data = if crash { current } else { durable };
                    image.files.insert(*ino, (data.clone(), node.perm));
                }
                Body::Dir { durable, current } => {
                    let entries = if crash { current } else { durable };
                    image.dirs.insert(*ino, (entries.clone(), node.perm));
                }
            }
        }
        image
    }

    /// The power goes out: every directory back to its durable entries,
    /// every file to its durable bytes (or the state frozen by a cut), and
    /// inodes no durable entry reaches are gone. Open handles are forgotten
    /// (the processes using them died with the power). Disarms faults.
    pub fn power_loss(&mut self) {
        let image = self.frozen.take().unwrap_or_else(|| self.image(false));
        let mut nodes = HashMap::new();
        let mut stack = vec![(ROOT, (ROOT, OsString::new()))];
        while let Some((ino, link)) = stack.pop() {
            if nodes.contains_key(&ino) {
                continue; // a second name (a rename made durable on both sides)
            }
            let mtime = self.nodes.get(&ino).map_or_else(SystemTime::now, |n| n.mtime);
            let (body, perm) = if let Some((entries, perm)) = image.dirs.get(&ino) {
                stack.extend(entries.iter().map(|(name, child)| (*child, (ino, name.clone()))));
                (Body::Dir { current: entries.clone(), durable: entries.clone() }, *perm)
            } else if let Some((data, perm)) = image.files.get(&ino) {
                (
                    Body::File { current: data.clone(), durable: data.clone(), dirty: None, lost: vec![] },
                    *perm,
                )
            } else {
                continue;
            };
            nodes.insert(ino, Node { body, perm, mtime, link, open: 0 });
        }
        // Drop names of inodes that no longer exist (none expected).
        let alive: HashSet<Ino> = nodes.keys().copied().collect();
        for node in nodes.values_mut() {
            if let Body::Dir { current, durable } = &mut node.body {
                current.retain(|_, ino| alive.contains(ino));
                durable.retain(|_, ino| alive.contains(ino));
            }
        }
        self.nodes = nodes;
        self.trigger = None;
        self.countdown = None;
        self.fsync_fault = None;
        self.cut.store(false, Ordering::SeqCst);
        self.stats.power_losses += 1;
    }
}
