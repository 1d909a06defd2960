//! The threads that answer ranking queries: one per core the process may run on, each kept on
//! its core.
//!
//! An HNSW search over a large graph is a chain of dependent memory reads; its upper levels and
//! its scratch context stay in the core's caches from one query to the next only if the next
//! query runs on the same core. Answered on tokio's blocking threads, which the scheduler moves
//! between cores as the network threads wake them, a 1M-vector search took about 8 ms (p50)
//! over gRPC against 4-5 ms with the server pinned to one core (`taskset`), measured one after
//! the other on this project's 2-core machine. Where the system refuses the pinning, the
//! threads run unpinned.

use std::sync::Arc;

use super::RankingError;

/// A fixed pool of pinned threads; cheap to clone.
#[derive(Clone)]
pub struct SearchThreads {
    pool: Arc<rayon::ThreadPool>,
}

impl SearchThreads {
    /// `threads` threads (0: one per allowed core), thread `i` pinned to the `i`-th allowed core.
    pub fn new(threads: usize) -> Result<Self, RankingError> {
        let cores = allowed_cores();
        let count = if threads == 0 { cores.len().max(1) } else { threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(count)
            .thread_name(|i| format!("ranking-{i}"))
            .start_handler(move |i| {
                if let Some(&core) = cores.get(i % cores.len().max(1)) {
                    if !pin_to(core) {
                        tracing::debug!(core, "cannot pin a ranking thread; it runs unpinned");
                    }
                }
            })
            .panic_handler(|_| tracing::error!("a ranking query panicked"))
            .build()
            .map_err(|e| RankingError::Threads(e.to_string()))?;
        Ok(SearchThreads { pool: Arc::new(pool) })
    }

    /// How many threads answer queries.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` on one of the threads and waits for its answer without blocking the async
    /// runtime. `None` if the work panicked.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            let _ = answer.send(work());
        });
        answered.await.ok()
    }
}

/// The cores this process may run on (its affinity mask), in order.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data, zeroed is an empty set; `sched_getaffinity` writes at
    // most `size_of::<cpu_set_t>()` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&core| libc::CPU_ISSET(core, &set)).collect()
    }
}

/// Keeps the calling thread on `core`; false if the system refused.
fn pin_to(core: usize) -> bool {
    // SAFETY: as above; `sched_setaffinity` only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_pinned_threads_and_a_panic_is_an_answer_not_a_crash() {
        let threads = SearchThreads::new(0).expect("pool");
        let cores = allowed_cores();
        assert!(!cores.is_empty(), "this process may run somewhere");
        let (name, core) = threads
            .run(|| {
                let core = unsafe { libc::sched_getcpu() };
                (std::thread::current().name().map(str::to_string), core)
            })
            .await
            .expect("answered");
        assert!(name.is_some_and(|n| n.starts_with("ranking-")));
        assert!(cores.contains(&(core as usize)));
        let panicked: Option<u32> = threads.run(|| panic!("a bad query")).await;
        assert_eq!(panicked, None);
        assert_eq!(threads.run(|| 7).await, Some(7), "the pool still answers");
    }

    #[tokio::test]
    async fn the_pool_has_as_many_threads_as_asked_or_one_per_allowed_core() {
        assert_eq!(SearchThreads::new(0).expect("pool").threads(), allowed_cores().len().max(1));
        let three = SearchThreads::new(3).expect("pool");
        assert_eq!(three.threads(), 3);
        // More threads than cores share the cores out in turn; all of them answer.
        let names = futures::future::join_all((0..12).map(|_| {
            three.run(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                std::thread::current().name().map(str::to_string)
            })
        }))
        .await;
        let distinct: std::collections::BTreeSet<_> = names.into_iter().map(|n| n.expect("answered")).collect();
        assert_eq!(distinct.len(), 3, "every thread took work: {distinct:?}");
    }
}
