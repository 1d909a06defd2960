//! Background jobs (embedding, proposal, training, evaluation, index builds): a persisted record
//! per job, live progress for watchers, and cooperative cancellation. Work runs on threads of
//! its own, never on the async runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::store::{now_millis, JobRecord, Store, StoreError};

/// Kinds of job. The numbers match the API's `JobKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Embedding = 1,
    Proposal = 2,
    Training = 3,
    Evaluation = 4,
    IndexBuild = 5,
}

/// States of a job. The numbers match the API's `JobState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued = 1,
    Running = 2,
    Succeeded = 3,
    Failed = 4,
    Cancelled = 5,
    Interrupted = 6,
}

impl JobState {
    pub fn from_number(n: i32) -> Option<JobState> {
        use JobState::*;
        [Queued, Running, Succeeded, Failed, Cancelled, Interrupted].into_iter().find(|s| *s as i32 == n)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job with id {0}")]
    NotFound(u64),
    #[error("job {id} already ended ({state:?}); only queued or running jobs can be cancelled")]
    AlreadyEnded { id: u64, state: JobState },
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Live {
    sender: watch::Sender<JobRecord>,
    cancel: Arc<AtomicBool>,
}

/// The job registry.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
    live: Arc<Mutex<HashMap<u64, Live>>>,
    /// Set when the server shuts down: running jobs stop and end as interrupted.
    stopping: Arc<AtomicBool>,
    /// Threads started by [`Jobs::spawn`], joined by [`Jobs::shutdown`].
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

/// What the code doing a job holds: it reports progress and checks for cancellation.
pub struct JobHandle {
    jobs: Jobs,
    id: u64,
    cancel: Arc<AtomicBool>,
}

impl Jobs {
    pub fn new(store: Store) -> Self {
        Jobs { store, live: Arc::default(), stopping: Arc::default(), threads: Arc::default() }
    }

    /// Runs `work` for a started job on a thread of its own. The thread is joined at shutdown.
    pub fn spawn(&self, handle: JobHandle, name: &str, work: impl FnOnce(JobHandle) + Send + 'static) {
        let id = handle.id();
        let spawned = std::thread::Builder::new().name(format!("{name}-{id}")).spawn(move || {
            work(handle);
            // A job's buffers (a training's gigabytes) go back to the system once it ends.
            crate::allocator::release_unused();
        });
        let mut threads = self.threads.lock().expect("not poisoned");
        threads.retain(|t| !t.is_finished());
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                tracing::error!(job = id, error = %e, "cannot start a job thread");
                // The handle went down with the failed spawn; record the failure directly.
                let _ = self.update(id, true, |job| {
                    job.state = JobState::Failed as i32;
                    job.message = format!("cannot start a thread: {e}");
                    job.end_millis = now_millis();
                });
                self.live.lock().expect("not poisoned").remove(&id);
            }
        }
    }

    /// Asks every running job to stop and waits for the threads of [`Jobs::spawn`].
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for live in self.live.lock().expect("not poisoned").values() {
            live.cancel.store(true, Ordering::SeqCst);
        }
        let threads = std::mem::take(&mut *self.threads.lock().expect("not poisoned"));
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Marks jobs that were queued or running when the server last stopped as interrupted.
    /// Returns how many there were.
    pub fn mark_interrupted(&self) -> Result<usize, JobError> {
        let mut count = 0;
        for mut job in self.store.all_jobs()? {
            if JobState::from_number(job.state).is_some_and(|s| !s.is_final()) {
                job.state = JobState::Interrupted as i32;
                job.end_millis = now_millis();
                job.message = format!("interrupted by a server stop during: {}", job.message);
                self.store.put_job(&job)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Jobs of `kind` that ended interrupted (by a server stop), oldest first.
    pub fn interrupted(&self, kind: JobKind) -> Result<Vec<JobRecord>, JobError> {
        let mut jobs: Vec<JobRecord> = self
            .store
            .all_jobs()?
            .into_iter()
            .filter(|j| j.kind == kind as i32 && j.state == JobState::Interrupted as i32)
            .collect();
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// Runs an interrupted job again under its own id (state running, `message` saying so).
    pub fn resume(&self, mut record: JobRecord, message: String) -> Result<JobHandle, JobError> {
        record.state = JobState::Running as i32;
        record.message = message;
        record.end_millis = 0;
        self.store.put_job(&record)?;
        Ok(self.go_live(record))
    }

    /// Replaces the message of an ended job.
    pub fn note(&self, id: u64, message: String) -> Result<(), JobError> {
        let mut job = self.store.job(id)?.ok_or(JobError::NotFound(id))?;
        job.message = message;
        self.store.put_job(&job)?;
        Ok(())
    }

    /// Marks an ended job succeeded: its work was done before the server stopped.
    pub fn note_succeeded(&self, id: u64, message: String) -> Result<(), JobError> {
        let mut job = self.store.job(id)?.ok_or(JobError::NotFound(id))?;
        job.state = JobState::Succeeded as i32;
        job.message = message;
        self.store.put_job(&job)?;
        Ok(())
    }

    /// Registers a new running job.    /// Registers a new running job.
    pub fn start(&self, kind: JobKind, created_by: u64, model_id: &str, device: &str) -> Result<JobHandle, JobError> {
        let now = now_millis();
        let record = JobRecord {
            id: self.store.next_id("jobs")?,
            kind: kind as i32,
            state: JobState::Running as i32,
            created_by,
            create_millis: now,
            start_millis: now,
            model_id: model_id.into(),
            device: device.into(),
            message: "starting".into(),
            ..Default::default()
        };
        self.store.put_job(&record)?;
        Ok(self.go_live(record))
    }

    /// Makes a stored running job live: watchers see it, cancel reaches it.
    fn go_live(&self, record: JobRecord) -> JobHandle {
        let cancel = Arc::new(AtomicBool::new(false));
        let id = record.id;
        let (sender, _) = watch::channel(record);
        self.live.lock().expect("not poisoned").insert(id, Live { sender, cancel: cancel.clone() });
        if self.stopping.load(Ordering::SeqCst) {
            cancel.store(true, Ordering::SeqCst);
        }
        JobHandle { jobs: self.clone(), id, cancel }
    }

    /// The id of a running job that works with `model_id` (an evaluation, say), if any.
    pub fn running_with_model(&self, model_id: &str) -> Option<u64> {
        let live = self.live.lock().expect("not poisoned");
        live.iter().filter(|(_, l)| l.sender.borrow().model_id == model_id).map(|(id, _)| *id).min()
    }

    pub fn get(&self, id: u64) -> Result<JobRecord, JobError> {
        if let Some(live) = self.live.lock().expect("not poisoned").get(&id) {
            return Ok(live.sender.borrow().clone());
        }
        self.store.job(id)?.ok_or(JobError::NotFound(id))
    }

    /// Jobs newest first, optionally of one kind. `before` is an exclusive upper id bound (0 = none).
    pub fn list(
        &self,
        kind: Option<i32>,
        before: u64,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, Option<u64>), JobError> {
        let mut out = Vec::new();
        let upper = if before == 0 { u64::MAX } else { before };
        for id in (1..upper.min(self.store.peek_id("jobs")? + 1)).rev() {
            let job = match self.get(id) {
                Ok(job) => job,
                Err(JobError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if kind.is_some_and(|k| k != job.kind) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, Some(id + 1)));
            }
            out.push(job);
        }
        Ok((out, None))
    }

    /// A receiver of the job's updates while it runs; `None` once it has ended.
    pub fn watch(&self, id: u64) -> Result<Option<watch::Receiver<JobRecord>>, JobError> {
        if let Some(live) = self.live.lock().expect("not poisoned").get(&id) {
            return Ok(Some(live.sender.subscribe()));
        }
        self.get(id).map(|_| None)
    }

    /// Asks a running job to stop. It ends as cancelled at its next check.
    pub fn cancel(&self, id: u64) -> Result<JobRecord, JobError> {
        if let Some(live) = self.live.lock().expect("not poisoned").get(&id) {
            live.cancel.store(true, Ordering::SeqCst);
            return Ok(live.sender.borrow().clone());
        }
        let job = self.get(id)?;
        let state = JobState::from_number(job.state).unwrap_or(JobState::Failed);
        Err(JobError::AlreadyEnded { id, state })
    }

    fn update(&self, id: u64, persist: bool, f: impl FnOnce(&mut JobRecord)) -> Result<(), JobError> {
        let live = self.live.lock().expect("not poisoned");
        let Some(entry) = live.get(&id) else { return Ok(()) };
        let mut record = entry.sender.borrow().clone();
        f(&mut record);
        if persist {
            self.store.put_job(&record)?;
        }
        entry.sender.send_replace(record);
        Ok(())
    }
}

impl JobHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True once the job was cancelled or the server is stopping.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// The flag behind [`JobHandle::is_cancelled`], for code that polls an `AtomicBool`.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    /// True when the server is shutting down (rather than a user cancelling).
    pub fn is_stopping(&self) -> bool {
        self.jobs.stopping.load(Ordering::SeqCst)
    }

    /// Ends the job by the reason it stopped early: interrupted when the server is stopping,
    /// else cancelled.
    pub fn stopped(self, message: impl Into<String>) -> Result<JobRecord, JobError> {
        let state = if self.is_stopping() { JobState::Interrupted } else { JobState::Cancelled };
        self.end(state, message.into())
    }

    pub fn set_batches(&self, ids: &[u64]) -> Result<(), JobError> {
        self.jobs.update(self.id, true, |job| job.batch_ids = ids.to_vec())
    }

    /// Reports progress (kept on disk too, so a restart shows how far the job got).
    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) -> Result<(), JobError> {
        let message = message.into();
        self.jobs.update(self.id, true, |job| {
            job.done = done;
            job.total = total;
            job.message = message;
        })
    }

    /// Reports progress and named figures in one update, kept on disk too.
    pub fn report(
        &self,
        done: u64,
        total: u64,
        message: impl Into<String>,
        metrics: &[(&str, f64)],
    ) -> Result<(), JobError> {
        let message = message.into();
        self.jobs.update(self.id, true, |job| {
            job.done = done;
            job.total = total;
            job.message = message;
            for (name, value) in metrics {
                job.metrics.insert(name.to_string(), *value);
            }
        })
    }

    pub fn set_metric(&self, name: &str, value: f64) -> Result<(), JobError> {
        self.jobs.update(self.id, false, |job| {
            job.metrics.insert(name.to_string(), value);
        })
    }

    /// Ends the job: succeeded, or cancelled if cancellation was asked for.
    pub fn succeed(self, message: impl Into<String>) -> Result<JobRecord, JobError> {
        let state = if self.is_cancelled() { JobState::Cancelled } else { JobState::Succeeded };
        self.end(state, message.into())
    }

    /// Ends the job as succeeded even if a cancel came too late to stop it: its work is done.
    pub fn completed(self, message: impl Into<String>) -> Result<JobRecord, JobError> {
        self.end(JobState::Succeeded, message.into())
    }

    /// Ends the job because the server is stopping; a restart may start the work again.
    pub fn interrupt(self, message: impl Into<String>) -> Result<JobRecord, JobError> {
        self.end(JobState::Interrupted, message.into())
    }

    pub fn fail(self, message: impl Into<String>) -> Result<JobRecord, JobError> {
        self.end(JobState::Failed, message.into())
    }

    fn end(self, state: JobState, message: String) -> Result<JobRecord, JobError> {
        self.jobs.update(self.id, true, |job| {
            job.state = state as i32;
            job.message = message;
            job.end_millis = now_millis();
        })?;
        self.jobs.store.flush_blocking()?;
        let live = self.jobs.live.lock().expect("not poisoned").remove(&self.id);
        Ok(live.map(|l| l.sender.borrow().clone()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_watch_cancel_and_interruption() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::new(Store::open(dir.path()).unwrap());
        let handle = jobs.start(JobKind::Embedding, 1, "descriptor/v1", "cpu").unwrap();
        let mut rx = jobs.watch(handle.id()).unwrap().expect("live");
        handle.progress(3, 10, "embedding").unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!((rx.borrow_and_update().done, jobs.get(handle.id()).unwrap().total), (3, 10));
        jobs.cancel(handle.id()).unwrap();
        assert!(handle.is_cancelled());
        let id = handle.id();
        let ended = handle.succeed("stopped").unwrap();
        assert_eq!(ended.state, JobState::Cancelled as i32);
        assert!(jobs.watch(id).unwrap().is_none());
        assert!(matches!(jobs.cancel(id), Err(JobError::AlreadyEnded { .. })));

        // A job left running by a crash is reported as interrupted at the next start.
        let second = jobs.start(JobKind::Training, 1, "", "cpu").unwrap();
        second.progress(1, 5, "epoch 1").unwrap();
        let reopened = Jobs::new(jobs.store.clone());
        assert_eq!(reopened.mark_interrupted().unwrap(), 1);
        let record = reopened.get(second.id()).unwrap();
        assert_eq!((record.state, record.done), (JobState::Interrupted as i32, 1));

        let (all, next) = jobs.list(None, 0, 10).unwrap();
        assert_eq!((all.iter().map(|j| j.id).collect::<Vec<_>>(), next), (vec![2, 1], None));
        let (only, _) = jobs.list(Some(JobKind::Embedding as i32), 0, 10).unwrap();
        assert_eq!(only.len(), 1);
        let (page, next) = jobs.list(None, 0, 1).unwrap();
        assert_eq!((page[0].id, next), (2, Some(2)));
        assert_eq!(jobs.list(None, next.unwrap(), 1).unwrap().0[0].id, 1);
    }
}
