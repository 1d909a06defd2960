//! Pair proposal: among the embedded images, find the pairs of different identities that a model
//! finds most alike (by a distance threshold or a budget), store them as labeling batches, and
//! describe the distance distribution so a researcher can choose the threshold.

pub mod search;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::dataset::Datasets;
use crate::jobs::{JobError, JobHandle, JobKind, Jobs};
use crate::labeling::{Labeling, LabelingError};
use crate::models::descriptor::Descriptor;
use crate::models::{ModelError, Registry, RegistryError, UnknownModel};
use crate::store::{
    BatchRecord, ImageRecord, NewPair, NewProposal, PairRecord, Store, StoreError, BATCH_CLOSED, BATCH_OPEN,
};
use crate::vectors::Metric;
use search::{Control, PairFilter, SearchStop, Vectors};

/// Pairs per labeling batch unless asked otherwise; the method published batches of at most 500.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// A shuffle seed from the clock, for proposals that name none (it is recorded on the batches).
pub fn pick_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}
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
    #[error(
        "model {0} decides with a learned similarity head, not at an embedding distance; order \
         UNCERTAIN needs a model with a distance threshold"
    )]
    NoThreshold(String),
    #[error(transparent)]
    Registry(RegistryError),
    #[error("cannot embed the images with the model: {0}")]
    Model(#[from] ModelError),
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

impl From<RegistryError> for ProposalError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(id) => ProposalError::UnknownModel(UnknownModel(id)),
            other => ProposalError::Registry(other),
        }
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

/// Which pairs come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The smallest distances (the method's rule).
    #[default]
    Nearest,
    /// Distances nearest the model's decision threshold: the pairs the model is least sure of.
    Uncertain,
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
    pub order: Order,
    /// `Some(seed)`: the chosen pairs are dealt into batches (and so handed out) in a shuffle
    /// by this seed, as the method assigned pairs to batches at random; `None`: in `order`.
    pub shuffle_seed: Option<u64>,
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
        if self.order == Order::Uncertain && !matches!(self.limit, Limit::Budget(_)) {
            return bad("order UNCERTAIN needs a budget (the N pairs nearest the threshold), not max_distance".into());
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

/// The embedded images of a selection, in image id order. Vectors of cosine models are scaled
/// to unit length, so their Euclidean distance √(2 − 2·cos) orders pairs as cosine does.
struct Gallery {
    model_id: String,
    images: Vec<ImageRecord>,
    identities: Vec<u64>,
    data: Vec<f32>,
    dim: usize,
    /// The model's decision threshold as a distance between these vectors (none for models
    /// that decide with a learned head).
    threshold: Option<f32>,
}

/// What proposals need to embed images with any registered model.
#[derive(Clone)]
pub struct ModelSource {
    pub registry: Registry,
    pub descriptor: Arc<Descriptor>,
    pub datasets: Datasets,
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
    models: ModelSource,
    threads: usize,
    max_pairs: usize,
}

impl Proposals {
    /// `threads` computing threads (0 = one per core); at most `max_pairs` pairs per proposal.
    pub fn new(
        store: Store,
        jobs: Jobs,
        labeling: Labeling,
        models: ModelSource,
        threads: usize,
        max_pairs: usize,
    ) -> Self {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        Proposals { store, jobs, labeling, models, threads, max_pairs }
    }

    /// The selection's images with the model's embeddings. A trained model first embeds (and
    /// stores) the images it has no embedding for yet; the descriptor's come from its job.
    fn gallery(&self, selection: &Selection) -> Result<Gallery, ProposalError> {
        let model_id =
            if selection.model_id.is_empty() { self.models.registry.active_id()? } else { selection.model_id.clone() };
        let model = self.models.registry.load(&model_id, &self.models.descriptor)?;
        let dim = model.dim();
        let wanted: HashSet<&str> = selection.datasets.iter().map(String::as_str).collect();
        let mut images = Vec::new();
        let mut vectors = Vec::new();
        let mut absent = Vec::new();
        for image in self.store.images_from(0) {
            let image = image?;
            if !wanted.is_empty() && !wanted.contains(image.dataset.as_str()) {
                continue;
            }
            let vector = self.store.embedding(&model_id, image.id)?.filter(|v| v.len() == dim);
            if vector.is_none() {
                absent.push(image.id);
            }
            vectors.push(vector);
            images.push(image);
        }
        let embedded: HashMap<u64, Vec<f32>> =
            model.embed_stored(&self.store, &self.models.datasets, &absent)?.into_iter().collect();
        let cosine = model.metric() == Metric::Cosine;
        let threshold = match model.metric() {
            _ if model.has_head() => None,
            Metric::Euclidean => Some(model.threshold()),
            // Unit vectors at cosine similarity c are √(2 − 2c) apart.
            Metric::Cosine => Some((2.0 - 2.0 * model.threshold()).max(0.0).sqrt()),
        };
        let mut gallery =
            Gallery { model_id, images: Vec::new(), identities: Vec::new(), data: Vec::new(), dim, threshold };
        let mut missing = 0;
        for (image, vector) in images.into_iter().zip(vectors) {
            match vector.or_else(|| embedded.get(&image.id).cloned()) {
                Some(mut values) => {
                    if cosine {
                        let norm = values.iter().map(|x| x * x).sum::<f32>().sqrt();
                        if norm > 0.0 {
                            values.iter_mut().for_each(|x| *x /= norm);
                        }
                    }
                    gallery.data.extend_from_slice(&values);
                    gallery.identities.push(image.identity_id);
                    gallery.images.push(image);
                }
                None => missing += 1,
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
        if spec.order == Order::Uncertain && gallery.threshold.is_none() {
            return Err(ProposalError::NoThreshold(gallery.model_id));
        }
        let handle = self.jobs.start(JobKind::Proposal, created_by, &gallery.model_id, "cpu")?;
        let record = self.jobs.get(handle.id())?;
        let this = self.clone();
        self.jobs.spawn(handle, "proposal-job", move |handle| this.run(handle, spec, gallery));
        Ok(record)
    }

    /// The `k` pairs whose distance is nearest `threshold`. A histogram of all distances gives
    /// the narrowest band around the threshold sure to hold `k` pairs; the band's pairs are then
    /// collected and ordered by their distance from the threshold. Pairs skipped by the filter
    /// (proposed before) can leave a band short: it is widened until it holds `k` or everything.
    #[allow(clippy::too_many_arguments)]
    fn uncertain(
        &self,
        vectors: &Vectors<'_>,
        filter: &PairFilter<'_>,
        gallery: &Gallery,
        same_identity: bool,
        k: usize,
        threshold: f32,
        per_image: usize,
        control: &Control<'_>,
    ) -> Result<Vec<search::Found>, ProposalError> {
        const BINS: usize = 1_000;
        let h = search::histogram(vectors, &gallery.identities, same_identity, BINS, threshold, control)?;
        if h.total == 0 {
            return Ok(Vec::new());
        }
        let width = (h.max - h.min).max(f32::MIN_POSITIVE) / BINS as f32;
        let whole = (threshold - h.min).max(h.max - threshold) + width;
        // Each bin lies wholly inside [threshold - w, threshold + w] from some w on; taking bins
        // in that order, the first w whose bins hold k pairs.
        let mut bins: Vec<(f32, u64)> = h
            .counts
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let lo = h.min + i as f32 * width;
                ((threshold - lo).max(lo + width - threshold), count)
            })
            .collect();
        bins.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut held = 0;
        let mut w = whole;
        for (needed, count) in bins {
            held += count;
            if held >= k as u64 {
                w = needed;
                break;
            }
        }
        loop {
            let w_now = w.min(whole);
            let mut band = search::within_band(
                vectors,
                filter,
                threshold - w_now,
                threshold + w_now,
                self.max_pairs.max(k),
                control,
            )?;
            band.sort_by(|a, b| {
                (a.distance() - threshold)
                    .abs()
                    .total_cmp(&(b.distance() - threshold).abs())
                    .then(a.a.cmp(&b.a))
                    .then(a.b.cmp(&b.b))
            });
            let chosen = if per_image > 0 {
                search::cap_per_row(&band, gallery.images.len(), per_image, k)
            } else {
                band.truncate(k);
                band
            };
            if chosen.len() >= k || w_now >= whole {
                return Ok(chosen);
            }
            w *= 2.0;
        }
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
        let found = match (spec.order, spec.limit, gallery.threshold) {
            (Order::Uncertain, Limit::Budget(k), Some(t)) => {
                self.uncertain(&vectors, &filter, gallery, spec.selection.same_identity, k, t, per_image, &control)?
            }
            (_, Limit::MaxDistance(d), _) => {
                let all = search::within(&vectors, &filter, d, self.max_pairs, &control)?;
                if per_image > 0 {
                    search::cap_per_row(&all, n, per_image, usize::MAX)
                } else {
                    all
                }
            }
            (_, Limit::Budget(k), _) if per_image > 0 => {
                search::nearest_capped(&vectors, &filter, k, per_image, &control)?
            }
            (_, Limit::Budget(k), _) => search::nearest(&vectors, &filter, k, &control)?,
        };
        let search_seconds = started.elapsed().as_secs_f64();
        if handle.is_cancelled() {
            return Err(ProposalError::Cancelled);
        }
        let mut pairs: Vec<NewPair> = found
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
        let max_distance =
            pairs.iter().map(|p| p.distance).fold(None, |m: Option<f32>, d| Some(m.map_or(d, |m| m.max(d))));
        if let Some(seed) = spec.shuffle_seed {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            pairs.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        }
        let stored = self.store.insert_proposal(&NewProposal {
            model_id: &gallery.model_id,
            job_id: handle.id(),
            note: &spec.note,
            open: spec.open,
            batch_size: spec.batch_size,
            pairs: &pairs,
            shuffle_seed: spec.shuffle_seed,
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
        if let Some(max) = max_distance {
            handle.set_metric("max_distance", f64::from(max))?;
        }
        let mut message = format!("proposed {} pairs of {n} images in {} batches", stored.pairs, stored.batches.len());
        if stored.already_proposed > 0 {
            message.push_str(&format!(
                "; {} more were proposed before and stay in their batches",
                stored.already_proposed
            ));
        }
        if spec.order == Order::Uncertain {
            if let Some(t) = gallery.threshold {
                let first = if spec.shuffle_seed.is_some() { "" } else { " first" };
                message.push_str(&format!(", nearest the model's threshold (distance {t:.4}){first}"));
            }
        }
        match spec.shuffle_seed {
            Some(seed) => message.push_str(&format!("; dealt into batches at random (shuffle seed {seed})")),
            None => message.push_str("; in ranked order"),
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
