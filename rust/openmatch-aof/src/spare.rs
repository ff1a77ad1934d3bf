//! Buffers kept between batches, with a bound on what is kept.
//!
//! A batch of 10,000 orders passes through about 2.7 MB of frames and as
//! much again of operations. Allocated fresh for each batch, those buffers
//! come back from the allocator as pages the kernel has to fault in and
//! zero again: on the 2-vCPU VM of docs/fsync-benchmark.md, half the page
//! faults of `append_many(10,000)` and most of its system time. Kept, the
//! same pages serve the next batch.
//!
//! What is kept is bounded, so that memory does not grow with history: a
//! buffer is cut back to [`KEPT_BYTES_MAX`] when it is kept, and a pool
//! keeps at most a few.

use std::sync::Mutex;

/// The most capacity, in bytes, a kept buffer holds on to: a batch of
/// about 30,000 orders' frames. A larger batch's buffer is cut back to
/// it (a `realloc`, which gives the rest back).
pub const KEPT_BYTES_MAX: usize = 8 << 20;

/// Empties `buf` and cuts its capacity back to [`KEPT_BYTES_MAX`], for a
/// buffer that is kept for the next use.
pub fn trim_for_reuse<T>(buf: &mut Vec<T>) {
    buf.clear();
    let most = KEPT_BYTES_MAX / std::mem::size_of::<T>().max(1);
    if buf.capacity() > most {
        buf.shrink_to(most);
    }
}

/// A pool of empty buffers, at most `keep` of them.
#[derive(Debug)]
pub struct Spares<T> {
    kept: Mutex<Vec<Vec<T>>>,
    keep: usize,
}

impl<T> Spares<T> {
    /// A pool that keeps at most `keep` buffers.
    pub fn new(keep: usize) -> Self {
        Spares {
            kept: Mutex::new(Vec::with_capacity(keep)),
            keep,
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Vec<T>>> {
        // Only pushes and pops happen under the lock: a panic elsewhere
        // cannot leave the list torn.
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer: a kept one if there is one.
    pub fn take(&self) -> Vec<T> {
        self.kept().pop().unwrap_or_default()
    }

    /// Keeps `buf` (emptied, its capacity bounded) for a later
    /// [`Spares::take`], unless the pool is full or it holds nothing.
    pub fn give(&self, mut buf: Vec<T>) {
        trim_for_reuse(&mut buf);
        if buf.capacity() == 0 {
            return;
        }
        let mut kept = self.kept();
        if kept.len() < self.keep {
            kept.push(buf);
        }
    }

    /// How many buffers are kept.
    pub fn len(&self) -> usize {
        self.kept().len()
    }

    /// Whether no buffer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_comes_back_empty_with_its_capacity() {
        let spares = Spares::new(2);
        let mut buf = Vec::with_capacity(1000);
        buf.extend_from_slice(&[1u8; 10]);
        spares.give(buf);
        assert_eq!(spares.len(), 1);
        assert!(!spares.is_empty());
        let again = spares.take();
        assert!(again.is_empty());
        assert!(again.capacity() >= 1000);
        assert!(spares.is_empty());
        assert_eq!(spares.take().capacity(), 0, "none kept: a new one");
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound_and_nothing_empty() {
        let spares = Spares::new(2);
        for _ in 0..3 {
            spares.give(vec![0u8; 16]);
        }
        assert_eq!(spares.len(), 2);
        spares.give(Vec::<u8>::new());
        assert_eq!(spares.len(), 2);
        let none = Spares::<u8>::new(2);
        none.give(Vec::new());
        assert!(
            none.is_empty(),
            "a buffer without capacity is not worth keeping"
        );
    }

    #[test]
    fn a_large_buffer_is_cut_back_to_the_bound_in_bytes() {
        let mut bytes = vec![0u8; KEPT_BYTES_MAX + 4096];
        trim_for_reuse(&mut bytes);
        assert!(bytes.is_empty());
        assert!(bytes.capacity() <= KEPT_BYTES_MAX + 64);
        assert!(bytes.capacity() >= KEPT_BYTES_MAX);
        let mut words = vec![0u64; KEPT_BYTES_MAX / 8 + 100];
        trim_for_reuse(&mut words);
        assert!(words.capacity() * 8 <= KEPT_BYTES_MAX + 64);
        let mut small = Vec::<u8>::with_capacity(100);
        small.push(1);
        trim_for_reuse(&mut small);
        assert!(
            small.is_empty() && small.capacity() >= 100,
            "a small one keeps all"
        );
    }
}
