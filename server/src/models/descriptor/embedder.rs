//! Keeps the descriptor's embeddings complete: after imports (and at start-up) one background job
//! embeds every image that has no embedding yet. Requests while it runs make it look again
//! before it ends, so no image is left behind and no two jobs race.

use std::sync::{Arc, Mutex};

use image::RgbImage;

use super::{device_name, Descriptor, DescriptorError, MODEL_ID};
use crate::dataset::{DatasetError, Datasets};
use crate::jobs::{JobError, JobHandle, JobKind, Jobs};
use crate::store::{Store, StoreError};

/// Faces embedded per forward pass.
pub const BATCH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum EmbedJobError {
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct State {
    /// The job running now.
    running: Option<u64>,
    /// Work arrived while the job ran: look again before ending.
    again: bool,
    /// The server is shutting down: start nothing new.
    stopping: bool,
    /// The thread of the current (or last) job, joined on shutdown.
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts and coalesces embedding jobs.
#[derive(Clone)]
pub struct Embedder {
    store: Store,
    datasets: Datasets,
    jobs: Jobs,
    descriptor: Arc<Descriptor>,
    state: Arc<Mutex<State>>,
}

impl Embedder {
    pub fn new(store: Store, datasets: Datasets, jobs: Jobs, descriptor: Arc<Descriptor>) -> Self {
        Embedder { store, datasets, jobs, descriptor, state: Arc::default() }
    }

    /// Makes sure every image gets an embedding: returns the id of the job doing it, or `None`
    /// when nothing is missing.
    pub fn ensure(&self, requested_by: u64) -> Result<Option<u64>, EmbedJobError> {
        let mut state = self.state.lock().expect("not poisoned");
        if state.stopping {
            return Ok(None);
        }
        if let Some(id) = state.running {
            state.again = true;
            return Ok(Some(id));
        }
        if self.store.images_without_embedding(MODEL_ID)?.is_empty() {
            return Ok(None);
        }
        let handle =
            self.jobs.start(JobKind::Embedding, requested_by, MODEL_ID, &device_name(self.descriptor.device()))?;
        let id = handle.id();
        state.running = Some(id);
        state.again = false;
        // The previous thread cleared `running` as its last act and is exiting: join it, so that
        // no finished thread still holds the store.
        if let Some(previous) = state.thread.take() {
            let _ = previous.join();
        }
        let this = self.clone();
        let thread = std::thread::Builder::new()
            .name(format!("embed-job-{id}"))
            .spawn(move || this.run(handle, requested_by))
            .expect("spawn the embedding thread");
        state.thread = Some(thread);
        Ok(Some(id))
    }

    /// Stops the running job (it ends as interrupted) and waits until its thread has let go of
    /// the store. Called when the server shuts down.
    pub fn shutdown(&self) {
        let (running, thread) = {
            let mut state = self.state.lock().expect("not poisoned");
            state.stopping = true;
            (state.running, state.thread.take())
        };
        if let Some(id) = running {
            let _ = self.jobs.cancel(id);
        }
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// The job thread: embeds until nothing is missing; work that arrives after a job has
    /// recorded its end gets a follow-up job on the same thread.
    fn run(&self, mut handle: JobHandle, requested_by: u64) {
        loop {
            self.run_one(handle);
            let mut state = self.state.lock().expect("not poisoned");
            if std::mem::take(&mut state.again) && !state.stopping {
                let device = device_name(self.descriptor.device());
                match self.jobs.start(JobKind::Embedding, requested_by, MODEL_ID, &device) {
                    Ok(next) => {
                        state.running = Some(next.id());
                        handle = next;
                        continue;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start the follow-up embedding job"),
                }
            }
            state.running = None;
            return;
        }
    }

    fn run_one(&self, handle: JobHandle) {
        let span = tracing::info_span!("job", id = handle.id(), kind = "embedding");
        let _guard = span.enter();
        let mut embedded = 0u64;
        let result = loop {
            if let Err(e) = self.embed_missing(&handle, &mut embedded) {
                break Err(e);
            }
            let mut state = self.state.lock().expect("not poisoned");
            if state.again && !handle.is_cancelled() {
                state.again = false;
                continue;
            }
            break Ok(());
        };
        let stopping = self.state.lock().expect("not poisoned").stopping;
        let outcome = match result {
            Ok(()) if stopping => handle.interrupt(format!("server stopped after {embedded} images")),
            Ok(()) => handle.succeed(format!("embedded {embedded} images")),
            Err(e) => {
                tracing::error!(error = %e, "embedding job failed");
                handle.fail(e.to_string())
            }
        };
        match outcome {
            Ok(job) => tracing::info!(embedded, state = job.state, "embedding job ended"),
            Err(e) => tracing::error!(error = %e, "cannot record the end of the embedding job"),
        }
    }

    fn embed_missing(&self, handle: &JobHandle, embedded: &mut u64) -> Result<(), EmbedJobError> {
        let missing = self.store.images_without_embedding(MODEL_ID)?;
        let total = *embedded + missing.len() as u64;
        handle.progress(*embedded, total, format!("embedding {} images", missing.len()))?;
        let started = std::time::Instant::now();
        let mut done_here = 0u64;
        for chunk in missing.chunks(BATCH) {
            if handle.is_cancelled() {
                return Ok(());
            }
            let mut ids = Vec::with_capacity(chunk.len());
            let mut faces = Vec::with_capacity(chunk.len());
            for &id in chunk {
                // An image deleted while the job runs is simply skipped.
                match self.datasets.face(id) {
                    Ok(face) => {
                        ids.push(id);
                        faces.push(face);
                    }
                    Err(DatasetError::ImageNotFound(_)) => {}
                    Err(e @ DatasetError::BadStoredFace { .. }) => {
                        tracing::warn!(image_id = id, error = %e, "unreadable stored face, skipped")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let refs: Vec<&RgbImage> = faces.iter().collect();
            for (id, values) in ids.iter().zip(self.descriptor.embed(&refs)?) {
                self.store.put_embedding(MODEL_ID, *id, &values)?;
            }
            *embedded += ids.len() as u64;
            done_here += ids.len() as u64;
            handle.progress(*embedded, total, "embedding")?;
            handle.set_metric("images_per_second", done_here as f64 / started.elapsed().as_secs_f64().max(1e-9))?;
        }
        self.store.flush_blocking()?;
        Ok(())
    }
}
