//! Group commit: writers that need their writes on disk before answering wait for one shared
//! flush instead of flushing each. A background task flushes whenever someone waits; everyone
//! who asked before a flush started is released when it ends.
//!
//! Votes go one step further: they are queued (in the order the labeling state took them) and
//! the flusher writes the whole queue in one transaction right before its flush, so a group of
//! concurrent votes costs one transaction and one flush. Code that writes the same records
//! directly first calls [`GroupCommit::apply_pending`] so that the order stays the state's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use super::{Store, StoreError, VoteEffect, VoteRecord};

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
    stopping: Arc<AtomicBool>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    writer: Arc<Writer>,
}

/// The queued votes and the one way they reach the store.
struct Writer {
    store: Store,
    queue: Mutex<Vec<(VoteRecord, VoteEffect)>>,
    /// Held while a taken queue is written, so that groups land in the order they were taken.
    applying: Mutex<()>,
    /// A group failed to be written: the labeling state holds votes the store lacks.
    lost: AtomicBool,
}

impl Writer {
    fn apply(&self) -> Result<(), StoreError> {
        let _order = self.applying.lock().expect("not poisoned");
        let group = std::mem::take(&mut *self.queue.lock().expect("not poisoned"));
        let written = self.store.record_votes(&group);
        if written.is_err() {
            self.lost.store(true, Ordering::SeqCst);
        }
        written
    }
}

impl GroupCommit {
    /// Starts the flusher on the current tokio runtime.
    pub fn start(store: Store) -> Self {
        let epochs = Arc::new(Mutex::new(Epochs { next: 1, pending: false }));
        let wake = Arc::new(Notify::new());
        let (sender, done) = watch::channel((0, None));
        let stopping = Arc::new(AtomicBool::new(false));
        let writer =
            Arc::new(Writer { store, queue: Mutex::default(), applying: Mutex::default(), lost: false.into() });
        let (task_epochs, task_wake, task_stopping) = (Arc::downgrade(&epochs), wake.clone(), stopping.clone());
        let task_writer = writer.clone();
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
                    let writer = task_writer.clone();
                    let flushed = tokio::task::spawn_blocking(move || {
                        writer.apply()?;
                        writer.store.flush_blocking()
                    })
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Sled(sled::Error::ReportableBug(e.to_string()))));
                    tracing::trace!(epoch, micros = started.elapsed().as_micros() as u64, "group commit");
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
                if task_epochs.strong_count() == 0 || task_stopping.load(Ordering::SeqCst) {
                    return;
                }
            }
        });
        GroupCommit { epochs, wake, done, stopping, task: Arc::new(Mutex::new(Some(task))), writer }
    }

    /// Queues a vote for the next group; [`GroupCommit::commit`] then waits for it to be on disk.
    /// Call it in the order the votes were decided.
    pub fn enqueue_vote(&self, vote: VoteRecord, effect: VoteEffect) {
        self.writer.queue.lock().expect("not poisoned").push((vote, effect));
    }

    /// Writes the queued votes now (without waiting for a flush): for code about to read or
    /// write the same records directly.
    pub fn apply_pending(&self) -> Result<(), StoreError> {
        self.writer.apply()
    }

    /// Whether a group of votes failed to be written since the last call (and clears it): the
    /// labeling state must then be rebuilt from the store.
    pub fn take_lost(&self) -> bool {
        self.writer.lost.swap(false, Ordering::SeqCst)
    }

    /// Flushes what is pending and ends the flusher task, releasing its hold on the store.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_votes_land_in_order_and_survive_reopen() {
        use crate::store::{LabelRecord, NewPair, NewProposal, PAIR_LABELED};
        let dir = tempfile::tempdir().unwrap();
        let pair_id = {
            let store = Store::open(dir.path()).unwrap();
            let pairs = [NewPair { image_a: 1, image_b: 2, identity_a: 10, identity_b: 20, distance: 0.3 }];
            let proposal = NewProposal {
                model_id: "m",
                job_id: 1,
                note: "",
                open: true,
                batch_size: 10,
                pairs: &pairs,
                shuffle_seed: None,
            };
            store.insert_proposal(&proposal).unwrap();
            let pair = store.pairs_page(0, 0, 1).unwrap().0.remove(0);
            let commit = GroupCommit::start(store.clone());
            // Three votes on one pair in one group: the counts must end at the last one's.
            for (i, annotator) in [5u64, 6, 7].into_iter().enumerate() {
                let vote = VoteRecord {
                    id: 100 + i as u64,
                    pair_id: pair.id,
                    annotator_id: annotator,
                    choice: 1,
                    lease_id: 200 + i as u64,
                    counted: true,
                    ..Default::default()
                };
                let label = (i == 2).then(|| LabelRecord {
                    pair_id: pair.id,
                    batch_id: pair.batch_id,
                    majority: 1,
                    similar_votes: 3,
                    ..Default::default()
                });
                commit.enqueue_vote(vote, VoteEffect { pair_votes: i as u32 + 1, label });
            }
            // A vote on a pair deleted meanwhile is dropped; it does not fail its group.
            let orphan = VoteRecord { id: 99, pair_id: 9999, annotator_id: 5, lease_id: 199, ..Default::default() };
            commit.enqueue_vote(orphan, VoteEffect { pair_votes: 1, label: None });
            assert!(store.vote_of_lease(200).unwrap().is_none(), "queued, not yet written");
            commit.commit().await.unwrap();
            assert!(!commit.take_lost());
            assert_eq!(store.label(pair.id).unwrap().unwrap().similar_votes, 3);
            commit.shutdown().await;
            pair.id
        };
        let store = Store::open(dir.path()).unwrap();
        let pair = store.pair(pair_id).unwrap().unwrap();
        assert_eq!((pair.votes, pair.state), (3, PAIR_LABELED));
        assert_eq!(store.votes_of_pair(pair_id).unwrap().iter().map(|v| v.annotator_id).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(store.vote_of_lease(201).unwrap().unwrap().id, 101);
        assert!(store.vote_of_lease(199).unwrap().is_none());
        assert_eq!(store.votes_of_annotator(7).unwrap().len(), 1);
    }
}
