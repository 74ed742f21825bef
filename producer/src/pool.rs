//! Batch buffers kept for reuse, as Kafka's producer keeps its `BufferPool`.
//!
//! A batch's buffer is allocated at its full size (up to 1 MiB) and freed
//! once the batch is finished (acknowledged, or failed for good). With
//! glibc's allocator a freed buffer of that size goes back to the kernel
//! (unmapped, or trimmed off the top of the heap), so every batch wrote
//! into fresh pages that the kernel had to fault in and zero (about 7% of
//! the producer's CPU at 100 B records, docs/client-cost.md). The sender
//! hands finished batches' buffers back here and new batches take them,
//! so the pages stay mapped and warm.

/// Buffers kept at most: enough for the batches in flight to one broker
/// (`max_in_flight_per_partition` is at most 5) plus those filling, and
/// at most 16 MiB idle at the largest batch size.
const MAX_POOLED: usize = 16;

/// Free batch buffers of one producer (kept under the accumulator's lock).
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
}

impl BufferPool {
    /// A buffer of at least `capacity` bytes: a pooled one, or a new one.
    #[inline]
    pub fn take(&mut self, capacity: usize) -> Vec<u8> {
        match self.free.pop() {
            Some(buf) if buf.capacity() >= capacity => buf,
            _ => Vec::with_capacity(capacity),
        }
    }

    /// Keeps `buf` for a later batch, unless the pool is full or `buf` is
    /// smaller than the batches it would serve.
    pub fn give(&mut self, buf: Vec<u8>, capacity: usize) {
        if self.free.len() < MAX_POOLED && buf.capacity() >= capacity {
            self.free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_protocol::batch::BatchBuilder;

    use super::*;

    #[test]
    fn a_built_batch_gives_its_buffer_back_once_unshared() {
        let mut builder = BatchBuilder::with_capacity(64 * 1024);
        builder.append(0, None, Some(b"v"), &[]);
        let bytes = builder.build();
        let extra = bytes.clone();
        let bytes = bytes.try_into_mut().expect_err("shared while cloned");
        drop(extra);
        let buf = BatchBuilder::reclaim(bytes).expect("unshared now");
        assert!(buf.capacity() >= 64 * 1024);
        let mut pool = BufferPool::default();
        let ptr = buf.as_ptr();
        pool.give(buf, 64 * 1024);
        let again = pool.take(64 * 1024);
        assert_eq!(again.as_ptr(), ptr, "the same allocation is handed out again");
        // A smaller one is not kept; a request larger than the pooled
        // buffers gets a new one.
        pool.give(Vec::with_capacity(16), 64 * 1024);
        assert!(pool.take(128 * 1024).capacity() >= 128 * 1024);
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = BufferPool::default();
        for _ in 0..MAX_POOLED + 5 {
            pool.give(Vec::with_capacity(1024), 1024);
        }
        assert_eq!(pool.free.len(), MAX_POOLED);
    }

    #[test]
    fn a_recycled_buffer_builds_the_same_batch() {
        let build = |builder: BatchBuilder| {
            let mut b = builder;
            b.append(5, Some(b"k"), Some(b"value"), &[]);
            b.build()
        };
        let fresh = build(BatchBuilder::with_capacity(4096));
        let mut dirty = vec![0xAB; 4096];
        dirty.truncate(3000);
        assert_eq!(build(BatchBuilder::with_buffer(dirty)), fresh);
    }
}
