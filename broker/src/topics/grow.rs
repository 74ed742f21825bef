//! Growing a live topic's partition count (partitions only grow).
//!
//! Durable in this order: the new partition directories are created and
//! the topic directory synced, then `topic.json` is replaced atomically
//! with the new count. A crash before the replace leaves empty partition
//! directories the topic does not name (never served; reused by the next
//! growth); after it, the topic has its new partitions. The live topic is
//! swapped for one with the longer partition list: the existing
//! partitions are shared, so in-flight requests holding the old `Arc`
//! keep working. Runs under the registry's admin lock, on a blocking
//! thread.

use std::fs;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{io, layout, poisoned, Topic, TopicFile, Topics};
use crate::errors::BrokerError;
use crate::partition::Partition;
use crate::storage::{durable, DiskSpace, Log};

impl Topics {
    /// Grows topic `name` to `count` partitions; returns the topic as it
    /// now is and its partition count before. Blocking.
    ///
    /// # Errors
    /// `UnknownTopic`; `InvalidPartitions` when `count` is not more than
    /// the topic has; `OpenFileLimit`; `Storage` when a directory or
    /// `topic.json` cannot be written (the topic then keeps its old count).
    pub fn add_partitions(&self, name: &str, count: u32) -> Result<(Arc<Topic>, u32), BrokerError> {
        let _admin = self.admin.lock().map_err(|_| poisoned("admin lock"))?;
        let topic = self.get(name).ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
        let old = topic.partitions.len() as u32;
        if count <= old {
            return Err(BrokerError::InvalidConfig(format!(
                "topic `{name}` has {old} partition(s): partitions only grow, ask for more than {old}"
            )));
        }
        let (needed, available) = (crate::fds::needed(count - old), crate::fds::available());
        if needed > available {
            let partitions = count - old;
            return Err(BrokerError::OpenFileLimit { topic: name.to_owned(), partitions, needed, available });
        }
        for index in old..count {
            let p = topic.dir.join(index.to_string());
            match fs::create_dir(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io("create", &p)(e)),
                _ => {}
            }
        }
        durable::sync_dir(&topic.dir)?;
        let config = topic.config();
        let file = TopicFile { name: name.to_owned(), id: Some(topic.id), partitions: count, config };
        // Opened before `topic.json` names them: a failure here changes nothing.
        let mut partitions = topic.partitions.clone();
        for index in old..count {
            let (log, _) =
                Log::open(&topic.dir.join(index.to_string()), file.config.clone(), DiskSpace::Real)?;
            let cancel = topic.cancel.child_token();
            let name = Arc::clone(&topic.name);
            partitions.push(Arc::new(Partition::new(name, index, log, cancel, Arc::clone(&self.metrics))));
        }
        self.fence_if_clustered(&partitions[old as usize..]);
        layout::write_topic_file(&topic.dir, &file)?;
        let grown = Arc::new(Topic {
            id: topic.id,
            name: Arc::clone(&topic.name),
            dir: topic.dir.clone(),
            partitions,
            deleted: AtomicBool::new(false),
            cancel: topic.cancel.clone(),
        });
        self.map.write().map_err(|_| poisoned("topic map"))?.insert(name.to_owned(), Arc::clone(&grown));
        Ok((grown, old))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::storage::LogConfig;

    fn load(dir: &Path) -> Topics {
        Topics::load(dir, CancellationToken::new(), Arc::default()).unwrap().0
    }

    #[test]
    fn grows_durably_reuses_a_crashed_growth_and_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let topics = load(dir.path());
        let before = topics.create("t", 2, LogConfig::default()).unwrap();
        // A growth that crashed before `topic.json` named its directory.
        fs::create_dir(dir.path().join("topics/t/2")).unwrap();
        let (grown, old) = topics.add_partitions("t", 4).unwrap();
        assert_eq!((old, grown.partitions.len()), (2, 4));
        assert!(Arc::ptr_eq(&before.partitions[1], &grown.partitions[1]), "existing partitions are shared");
        assert_eq!(topics.get("t").unwrap().partitions.len(), 4);
        for count in [4, 3] {
            assert!(matches!(topics.add_partitions("t", count), Err(BrokerError::InvalidConfig(_))));
        }
        assert!(matches!(topics.add_partitions("nosuch", 9), Err(BrokerError::UnknownTopic(_))));
        topics.close_all().unwrap();
        drop((topics, before, grown));
        let topics = load(dir.path());
        assert_eq!(topics.get("t").unwrap().partitions.len(), 4, "the count survives a restart");
    }
}
