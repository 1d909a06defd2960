//! Pair proposal: among the embedded images, find the pairs of different identities that a model
//! finds most alike (by a distance threshold or a budget), store them as labeling batches, and
//! describe the distance distribution so a researcher can choose the threshold.

pub mod search;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::jobs::{JobError, JobHandle, JobKind, Jobs};
use crate::labeling::{Labeling, LabelingError};
use crate::models::{self, UnknownModel};
use crate::store::{
    id_key, BatchRecord, ImageRecord, NewPair, NewProposal, PairRecord, Store, StoreError, BATCH_CLOSED, BATCH_OPEN,
};
use search::{Control, PairFilter, SearchStop, Vectors};

/// Pairs per labeling batch unless asked otherwise; the method published batches of at most 500.
pub const DEFAULT_BATCH_SIZE: usize = 500;
pub const MAX_BATCH_SIZE: usize = 10_000;
pub const DEFAULT_BINS: usize = 50;
pub const MAX_BINS: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    #[error(transparent)]
    UnknownModel(#[from] UnknownModel),
    #[error("no images to pair{}", datasets_note(.0))]
    NoImages(Vec<String>),
    #[error(
        "{missing} of {total} selected images have no {model} embedding yet; wait for the embedding job \
         (`facesim jobs list`) and try again"
    )]
    NotEmbedded { model: String, missing: usize, total: usize },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("more than {0} pairs match; lower the threshold, set a budget or raise --max-proposal-pairs")]
    TooMany(usize),
    #[error("no batch with id {0}")]
    BatchNotFound(u64),
    #[error("no pair with id {0}")]
    PairNotFound(u64),
    #[error("the computation was cancelled")]
    Cancelled,
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Labeling(#[from] LabelingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn datasets_note(datasets: &[String]) -> String {
    if datasets.is_empty() {
        String::new()
    } else {
        format!(" in dataset(s) {}", datasets.join(", "))
    }
}

impl From<SearchStop> for ProposalError {
    fn from(stop: SearchStop) -> Self {
        match stop {
            SearchStop::Cancelled => ProposalError::Cancelled,
            SearchStop::TooMany(n) => ProposalError::TooMany(n),
        }
    }
}

/// Which images and pairs take part.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Empty means the active model.
    pub model_id: String,
    /// Empty means every dataset.
    pub datasets: Vec<String>,
    pub same_identity: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    MaxDistance(f32),
    Budget(usize),
}

#[derive(Debug, Clone)]
pub struct ProposalSpec {
    pub selection: Selection,
    pub limit: Limit,
    /// 0 means no limit.
    pub max_pairs_per_image: usize,
    pub exclude_existing: bool,
    pub batch_size: usize,
    /// Batches start open for labeling (else closed until a researcher opens them).
    pub open: bool,
    pub note: String,
    /// An approximate search was allowed; the search is exact all the same.
    pub approximate: bool,
}

impl ProposalSpec {
    fn validate(&self, max_pairs: usize) -> Result<(), ProposalError> {
        let bad = |m: String| Err(ProposalError::InvalidRequest(m));
        match self.limit {
            Limit::MaxDistance(d) if !d.is_finite() || d < 0.0 => {
                return bad(format!("max_distance must be a finite distance >= 0, got {d}"))
            }
            Limit::Budget(0) => return bad("budget must be at least 1 pair".into()),
            Limit::Budget(n) if n > max_pairs => {
                return bad(format!("budget {n} is above this server's limit of {max_pairs} pairs per proposal"))
            }
            _ => {}
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return bad(format!("batch_size must be between 1 and {MAX_BATCH_SIZE}, got {}", self.batch_size));
        }
        if self.note.len() > 1000 {
            return bad("note must be at most 1000 bytes".into());
        }
        Ok(())
    }
}

/// A distance histogram over the selection.
#[derive(Debug, Clone, PartialEq)]
pub struct DistanceHistogram {
    pub model_id: String,
    pub min: f32,
    pub max: f32,
    pub counts: Vec<u64>,
    pub total_pairs: u64,
    pub mark: f32,
    pub within_mark: u64,
}

/// The embedded images of a selection, in image id order.
struct Gallery {
    model_id: String,
    images: Vec<ImageRecord>,
    identities: Vec<u64>,
    data: Vec<f32>,
    dim: usize,
}

impl Gallery {
    fn vectors(&self) -> Vectors<'_> {
        Vectors::new(&self.data, self.dim)
    }
}

#[derive(Clone)]
pub struct Proposals {
    store: Store,
    jobs: Jobs,
    labeling: Labeling,
    threads: usize,
    max_pairs: usize,
}

impl Proposals {
    /// `threads` computing threads (0 = one per core); at most `max_pairs` pairs per proposal.
    pub fn new(store: Store, jobs: Jobs, labeling: Labeling, threads: usize, max_pairs: usize) -> Self {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        Proposals { store, jobs, labeling, threads, max_pairs }
    }

    fn gallery(&self, selection: &Selection) -> Result<Gallery, ProposalError> {
        let model_id = models::resolve(&selection.model_id)?;
        let dim = models::dim(&model_id)?;
        let wanted: HashSet<&str> = selection.datasets.iter().map(String::as_str).collect();
        let mut gallery = Gallery { model_id, images: Vec::new(), identities: Vec::new(), data: Vec::new(), dim };
        let mut missing = 0;
        for item in self.store.images.scan_from::<ImageRecord>(&id_key(0)) {
            let (_, image) = item?;
            if !wanted.is_empty() && !wanted.contains(image.dataset.as_str()) {
                continue;
            }
            match self.store.embedding(&gallery.model_id, image.id)? {
                Some(values) if values.len() == dim => {
                    gallery.data.extend_from_slice(&values);
                    gallery.identities.push(image.identity_id);
                    gallery.images.push(image);
                }
                _ => missing += 1,
            }
        }
        if gallery.images.is_empty() && missing == 0 {
            return Err(ProposalError::NoImages(selection.datasets.clone()));
        }
        if missing > 0 {
            let total = missing + gallery.images.len();
            return Err(ProposalError::NotEmbedded { model: gallery.model_id, missing, total });
        }
        Ok(gallery)
    }

    /// The distribution of pair distances of a selection. CPU-heavy: call from a blocking thread.
    pub fn histogram(
        &self,
        selection: &Selection,
        bins: usize,
        mark: f32,
        cancel: &AtomicBool,
    ) -> Result<DistanceHistogram, ProposalError> {
        if bins == 0 || bins > MAX_BINS {
            return Err(ProposalError::InvalidRequest(format!("bins must be between 1 and {MAX_BINS}, got {bins}")));
        }
        if !mark.is_finite() || mark < 0.0 {
            return Err(ProposalError::InvalidRequest(format!("mark_distance must be >= 0, got {mark}")));
        }
        let gallery = self.gallery(selection)?;
        let control = Control { threads: self.threads, cancel, progress: &|_, _| {} };
        let h =
            search::histogram(&gallery.vectors(), &gallery.identities, selection.same_identity, bins, mark, &control)?;
        Ok(DistanceHistogram {
            model_id: gallery.model_id,
            min: h.min,
            max: h.max,
            counts: h.counts,
            total_pairs: h.total,
            mark,
            within_mark: h.within_mark,
        })
    }

    /// Checks the request, loads the embeddings and starts the proposal job.
    pub fn start(&self, spec: ProposalSpec, created_by: u64) -> Result<crate::store::JobRecord, ProposalError> {
        spec.validate(self.max_pairs)?;
        let gallery = self.gallery(&spec.selection)?;
        let handle = self.jobs.start(JobKind::Proposal, created_by, &gallery.model_id, "cpu")?;
        let record = self.jobs.get(handle.id())?;
        let this = self.clone();
        self.jobs.spawn(handle, "proposal-job", move |handle| this.run(handle, spec, gallery));
        Ok(record)
    }

    fn run(&self, handle: JobHandle, spec: ProposalSpec, gallery: Gallery) {
        let span = tracing::info_span!("job", id = handle.id(), kind = "proposal");
        let _guard = span.enter();
        let outcome = match self.propose(&handle, &spec, &gallery) {
            Ok(message) => handle.completed(message),
            Err(ProposalError::Cancelled) => handle.stopped("stopped before any pair was stored"),
            Err(e) => {
                tracing::warn!(error = %e, "proposal job failed");
                handle.fail(e.to_string())
            }
        };
        match outcome {
            Ok(job) => tracing::info!(state = job.state, message = %job.message, "proposal job ended"),
            Err(e) => tracing::error!(error = %e, "cannot record the end of the proposal job"),
        }
    }

    fn propose(&self, handle: &JobHandle, spec: &ProposalSpec, gallery: &Gallery) -> Result<String, ProposalError> {
        let started = Instant::now();
        let n = gallery.images.len();
        handle.progress(0, 0, format!("searching {n} images"))?;
        let existing = if spec.exclude_existing { self.store.proposed_pairs()? } else { HashSet::new() };
        let ids: Vec<u64> = gallery.images.iter().map(|i| i.id).collect();
        let skip = |a: u32, b: u32| !existing.is_empty() && existing.contains(&(ids[a as usize], ids[b as usize]));
        let filter = PairFilter { groups: &gallery.identities, same_group: spec.selection.same_identity, skip: &skip };
        let progress = |done: u64, total: u64| {
            if let Err(e) = handle.progress(done, total, "searching blocks of the distance matrix") {
                tracing::warn!(error = %e, "cannot record progress");
            }
        };
        let control = Control { threads: self.threads, cancel: handle.cancel_flag(), progress: &progress };
        let vectors = gallery.vectors();
        let per_image = spec.max_pairs_per_image;
        let found = match spec.limit {
            Limit::MaxDistance(d) => {
                let all = search::within(&vectors, &filter, d, self.max_pairs, &control)?;
                if per_image > 0 {
                    search::cap_per_row(&all, n, per_image, usize::MAX)
                } else {
                    all
                }
            }
            Limit::Budget(k) if per_image > 0 => search::nearest_capped(&vectors, &filter, k, per_image, &control)?,
            Limit::Budget(k) => search::nearest(&vectors, &filter, k, &control)?,
        };
        let search_seconds = started.elapsed().as_secs_f64();
        if handle.is_cancelled() {
            return Err(ProposalError::Cancelled);
        }
        let pairs: Vec<NewPair> = found
            .iter()
            .map(|f| {
                let (a, b) = (&gallery.images[f.a as usize], &gallery.images[f.b as usize]);
                NewPair {
                    image_a: a.id,
                    image_b: b.id,
                    identity_a: a.identity_id,
                    identity_b: b.identity_id,
                    distance: f.distance(),
                }
            })
            .collect();
        let stored = self.store.insert_proposal(&NewProposal {
            model_id: &gallery.model_id,
            job_id: handle.id(),
            note: &spec.note,
            open: spec.open,
            batch_size: spec.batch_size,
            pairs: &pairs,
        })?;
        self.store.flush_blocking()?;
        let batch_ids: Vec<u64> = stored.batches.iter().map(|b| b.id).collect();
        self.labeling.add_batches(&batch_ids)?;
        handle.set_batches(&batch_ids)?;
        let considered = (n as f64) * (n as f64 - 1.0) / 2.0;
        handle.set_metric("images", n as f64)?;
        handle.set_metric("pairs", stored.pairs as f64)?;
        handle.set_metric("search_seconds", search_seconds)?;
        handle.set_metric("pairs_scanned_per_second", considered / search_seconds.max(1e-9))?;
        if let Some(last) = pairs.last() {
            handle.set_metric("max_distance", last.distance as f64)?;
        }
        let mut message = format!("proposed {} pairs of {n} images in {} batches", stored.pairs, stored.batches.len());
        if stored.already_proposed > 0 {
            message.push_str(&format!(
                "; {} more were proposed before and stay in their batches",
                stored.already_proposed
            ));
        }
        if spec.approximate {
            message.push_str("; the search was exact (no approximate index is used for proposals)");
        }
        Ok(message)
    }

    pub fn pair(&self, id: u64) -> Result<PairRecord, ProposalError> {
        self.store.pair(id)?.ok_or(ProposalError::PairNotFound(id))
    }

    /// Pairs in id order from `start`; of one batch unless `batch_id` is 0.
    pub fn pairs(
        &self,
        batch_id: u64,
        start: u64,
        limit: usize,
    ) -> Result<(Vec<PairRecord>, Option<u64>), ProposalError> {
        if batch_id != 0 {
            self.batch(batch_id)?;
        }
        Ok(self.store.pairs_page(batch_id, start, limit)?)
    }

    pub fn batch(&self, id: u64) -> Result<BatchRecord, ProposalError> {
        self.store.batch(id)?.ok_or(ProposalError::BatchNotFound(id))
    }

    pub fn batches(&self, start: u64, limit: usize) -> Result<(Vec<BatchRecord>, Option<u64>), ProposalError> {
        Ok(self.store.batches_page(start, limit)?)
    }

    /// Opens or closes a batch; the change is on disk when this returns.
    pub async fn set_batch_open(&self, id: u64, open: bool) -> Result<BatchRecord, ProposalError> {
        let state = if open { BATCH_OPEN } else { BATCH_CLOSED };
        let batch = self.store.set_batch_state(id, state)?.ok_or(ProposalError::BatchNotFound(id))?;
        self.store.flush().await?;
        self.labeling.set_batch_open(id, open);
        Ok(batch)
    }
}
