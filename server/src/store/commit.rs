//! Group commit: writers that need their writes on disk before answering wait for one shared
//! flush instead of flushing each. A background task flushes whenever someone waits; everyone
//! who asked before a flush started is released when it ends.

use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use super::{Store, StoreError};

#[derive(Default)]
struct Epochs {
    /// The number the next flush will carry.
    next: u64,
    /// Someone waits for the next flush.
    pending: bool,
}

/// Shared by clones; [`GroupCommit::shutdown`] ends the flusher task (which holds the store).
#[derive(Clone)]
pub struct GroupCommit {
    epochs: Arc<Mutex<Epochs>>,
    wake: Arc<Notify>,
    /// (last finished flush, last flush that failed and why).
    done: watch::Receiver<(u64, Option<(u64, String)>)>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl GroupCommit {
    /// Starts the flusher on the current tokio runtime.
    pub fn start(store: Store) -> Self {
        let epochs = Arc::new(Mutex::new(Epochs { next: 1, pending: false }));
        let wake = Arc::new(Notify::new());
        let (sender, done) = watch::channel((0, None));
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (task_epochs, task_wake, task_stopping) = (Arc::downgrade(&epochs), wake.clone(), stopping.clone());
        let task = tokio::spawn(async move {
            loop {
                task_wake.notified().await;
                loop {
                    let Some(epochs) = task_epochs.upgrade() else { return };
                    let epoch = {
                        let mut e = epochs.lock().expect("not poisoned");
                        if !e.pending {
                            break;
                        }
                        e.pending = false;
                        e.next += 1;
                        e.next - 1
                    };
                    drop(epochs);
                    let started = std::time::Instant::now();
                    let flushed = store.flush().await;
                    tracing::trace!(epoch, micros = started.elapsed().as_micros() as u64, "group commit flush");
                    let failed = match flushed {
                        Ok(()) => None,
                        Err(e) => {
                            tracing::error!(error = %e, "group commit flush failed");
                            Some((epoch, e.to_string()))
                        }
                    };
                    sender.send_modify(|(last, error)| {
                        *last = epoch;
                        if failed.is_some() {
                            *error = failed;
                        }
                    });
                }
                if task_epochs.strong_count() == 0 || task_stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
            }
        });
        GroupCommit { epochs, wake, done, stopping, task: Arc::new(Mutex::new(Some(task))) }
    }

    /// Flushes what is pending and ends the flusher task, releasing its hold on the store.
    pub async fn shutdown(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.epochs.lock().expect("not poisoned").pending = true;
        self.wake.notify_one();
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Returns once everything written before the call is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let target = {
            let mut e = self.epochs.lock().expect("not poisoned");
            e.pending = true;
            e.next
        };
        self.wake.notify_one();
        let mut done = self.done.clone();
        let state = done
            .wait_for(|(last, _)| *last >= target)
            .await
            .map_err(|_| StoreError::Sled(sled::Error::ReportableBug("the flusher stopped".into())))?;
        match &state.1 {
            Some((epoch, message)) if *epoch >= target => {
                Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(message.clone()))))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_flushes_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let commit = GroupCommit::start(store.clone());
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let (store, commit) = (store.clone(), commit.clone());
            tasks.push(tokio::spawn(async move {
                store.meta.put_raw(format!("k{i}").as_bytes(), b"v").unwrap();
                commit.commit().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let flushes = commit.done.borrow().0;
        assert!((1..200).contains(&flushes), "{flushes} flushes for 200 commits");
    }
}
