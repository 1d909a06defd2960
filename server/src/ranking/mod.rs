//! Similarity questions about faces, answered by the active model (or one a request pins):
//! the faces that look most like a face (`rank`), whether two faces look alike (`compare`), and
//! the embedding of a face (`embed`).
//!
//! Galleries and their indexes live in [`index`]; exact search in [`gallery`], approximate search
//! in [`approx`].

pub mod approx;
pub mod gallery;
pub mod index;
mod threads;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::dataset::{DatasetError, Datasets, DecodeError, FaceRequest};
use crate::models::{LoadedModel, ModelError, RegistryError};
use crate::store::{Store, StoreError};
use crate::vectors::Metric;
use gallery::Hit;
pub use index::{IndexOptions, Indexes, Served};
pub use threads::SearchThreads;

/// Most results one query may ask for.
pub const MAX_K: usize = 1000;
/// Results when a query does not say.
pub const DEFAULT_K: usize = 10;
/// Most queries in one batch.
pub const MAX_BATCH: usize = 256;

/// A face given to a question.
#[derive(Debug, Clone)]
pub enum FaceRef {
    ImageId(u64),
    /// Uploaded image bytes, cut as the request asks.
    ImageBytes(Vec<u8>, FaceRequest),
    Embedding(Vec<f32>),
}

/// How alike two faces are under a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub model_id: String,
    pub metric: Metric,
    /// A distance (Euclidean) or a similarity (cosine); head models give their probability of
    /// "similar" as a similarity.
    pub score: f32,
    pub threshold: f32,
    pub similar: bool,
}

/// How a query searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Approximate for galleries of at least the configured size, else exact.
    #[default]
    Auto,
    Exact,
    Approximate,
}

/// One ranking question.
#[derive(Debug, Clone)]
pub struct RankQuery {
    pub face: FaceRef,
    /// 0 means [`DEFAULT_K`].
    pub k: usize,
    /// Drop results worse than this, in the metric's units.
    pub threshold: Option<f32>,
    /// `None`: the model's own metric.
    pub metric: Option<Metric>,
    pub exclude_query_identity: bool,
    pub identity_ids: Vec<u64>,
    pub datasets: Vec<String>,
    pub group_by_identity: bool,
    /// Empty: the active model.
    pub model_id: String,
    pub mode: SearchMode,
}

/// One row of a ranking: an image, or an identity when grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedFace {
    pub image_id: u64,
    pub identity_id: u64,
    pub identity: String,
    pub score: f32,
    /// Images averaged into the row (grouping), else 1.
    pub merged_images: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub results: Vec<RankedFace>,
    pub model_id: String,
    pub metric: Metric,
    /// The search actually used.
    pub mode: SearchMode,
}

#[derive(Debug, thiserror::Error)]
pub enum RankingError {
    #[error("{0}")]
    Invalid(String),
    #[error("no image with id {0}")]
    ImageNotFound(u64),
    #[error("no identity with id {0}")]
    IdentityNotFound(u64),
    #[error("no dataset named {0:?}")]
    DatasetNotFound(String),
    #[error("the uploaded image cannot be used: {0}")]
    BadImage(#[from] DecodeError),
    #[error("an embedding of {model} has {expected} finite values, got {got} values")]
    BadEmbedding { model: String, expected: usize, got: usize },
    #[error("a face must be given as an image id, image bytes or an embedding")]
    MissingFace,
    #[error("the ranking index is still being built (the server just started); retry in a moment")]
    NoIndex,
    #[error("cannot start the ranking threads: {0}")]
    Threads(String),
    #[error("the benchmark gallery cannot be used: {0}")]
    BenchGallery(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Dataset(DatasetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DatasetError> for RankingError {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::ImageNotFound(id) => RankingError::ImageNotFound(id),
            DatasetError::IdentityNotFound(id) => RankingError::IdentityNotFound(id),
            DatasetError::BadUpload(e) => RankingError::BadImage(e),
            other => RankingError::Dataset(other),
        }
    }
}

#[derive(Clone)]
pub struct Ranking {
    store: Store,
    datasets: Datasets,
    indexes: Indexes,
    /// Candidate list of HNSW searches.
    ef_search: usize,
    threads: SearchThreads,
}

/// A query's face as the model sees it: its embedding, and its gallery row and identity when it
/// is a stored image.
struct Probe {
    vector: Vec<f32>,
    image_id: Option<u64>,
    identity_id: Option<u64>,
}

impl Ranking {
    pub fn new(store: Store, datasets: Datasets, indexes: Indexes, ef_search: usize, threads: SearchThreads) -> Self {
        Ranking { store, datasets, indexes, ef_search, threads }
    }

    /// The threads `rank` should be called on (see [`threads`]).
    pub fn threads(&self) -> &SearchThreads {
        &self.threads
    }

    pub fn indexes(&self) -> &Indexes {
        &self.indexes
    }

    /// The id of the model a request means: the model it names (which must be registered), or
    /// the one unpinned queries are answered with now.
    pub fn model_id(&self, requested: &str) -> Result<String, RankingError> {
        Ok(self.model(requested)?.id().to_string())
    }

    fn model(&self, requested: &str) -> Result<Arc<LoadedModel>, RankingError> {
        if requested.is_empty() {
            return Ok(self.indexes.serving().ok_or(RankingError::NoIndex)?.model.clone());
        }
        self.indexes.model(requested)
    }

    /// The embedding of a face under a model (empty: the serving one). CPU-heavy for uploaded
    /// images and trained models: call from a blocking thread.
    pub fn embed(&self, model: &str, face: FaceRef) -> Result<(String, Vec<f32>), RankingError> {
        let model = self.model(model)?;
        let probe = self.probe(&model, None, face)?;
        Ok((model.id().to_string(), probe.vector))
    }

    fn probe(&self, model: &LoadedModel, served: Option<&Served>, face: FaceRef) -> Result<Probe, RankingError> {
        match face {
            FaceRef::ImageId(id) => {
                if let Some(row) = served.and_then(|s| s.gallery.row_of(id)) {
                    let g = &served.expect("a row came from it").gallery;
                    return Ok(Probe {
                        vector: g.vector(row).to_vec(),
                        image_id: Some(id),
                        identity_id: Some(g.row(row).identity_id),
                    });
                }
                let image = self.datasets.image(id)?;
                let vector = match self.store.embedding(model.id(), id)? {
                    Some(values) => values,
                    None => {
                        // Not embedded yet (a job may still be running): compute it now.
                        let values = model.embed_faces(&[&self.datasets.face(id)?])?.remove(0);
                        self.store.put_embedding(model.id(), id, &values)?;
                        values
                    }
                };
                Ok(Probe { vector, image_id: Some(id), identity_id: Some(image.identity_id) })
            }
            bytes @ FaceRef::ImageBytes(..) => {
                let vector = model.embed_faces(&[&self.face_of(bytes)?])?.remove(0);
                Ok(Probe { vector, image_id: None, identity_id: None })
            }
            FaceRef::Embedding(values) => {
                if values.len() != model.dim() || values.iter().any(|v| !v.is_finite()) {
                    return Err(RankingError::BadEmbedding {
                        model: model.id().to_string(),
                        expected: model.dim(),
                        got: values.len(),
                    });
                }
                Ok(Probe { vector: values, image_id: None, identity_id: None })
            }
        }
    }

    /// Compares two faces under a model and decides at the model's threshold.
    pub fn compare(&self, model: &str, a: FaceRef, b: FaceRef) -> Result<Comparison, RankingError> {
        let model = self.model(model)?;
        let given_embedding = matches!(a, FaceRef::Embedding(_)) || matches!(b, FaceRef::Embedding(_));
        let score = if model.has_head() && !given_embedding {
            // Head models score the two faces themselves.
            model.compare_faces(&self.face_of(a)?, &self.face_of(b)?)?
        } else {
            let (pa, pb) = (self.probe(&model, None, a)?, self.probe(&model, None, b)?);
            model.compare_embeddings(&pa.vector, &pb.vector)?
        };
        let (metric, threshold) = (model.metric(), model.threshold());
        Ok(Comparison {
            model_id: model.id().to_string(),
            metric,
            score,
            threshold,
            similar: metric.within(score, threshold),
        })
    }

    /// The face crop of a stored or uploaded image, as every model's input starts.
    fn face_of(&self, face: FaceRef) -> Result<image::RgbImage, RankingError> {
        match face {
            FaceRef::ImageId(id) => Ok(self.datasets.face(id)?),
            FaceRef::ImageBytes(bytes, request) => Ok(self.datasets.upload_face(&bytes, request)?.crop),
            FaceRef::Embedding(_) => Err(RankingError::MissingFace),
        }
    }

    /// Answers one ranking question. CPU-heavy: call from a blocking thread.
    pub fn rank(&self, query: RankQuery) -> Result<Ranked, RankingError> {
        let k = match query.k {
            0 => DEFAULT_K,
            k if k > MAX_K => return Err(RankingError::Invalid(format!("k must be 1-{MAX_K}, got {k}"))),
            k => k,
        };
        if query.threshold.is_some_and(|t| !t.is_finite()) {
            return Err(RankingError::Invalid("score_threshold must be a finite number".into()));
        }
        if query.exclude_query_identity && !matches!(query.face, FaceRef::ImageId(_)) {
            return Err(RankingError::Invalid(
                "exclude_query_identity needs a query by image id (an uploaded face has no identity)".into(),
            ));
        }
        let served = self.indexes.get(&query.model_id)?;
        let model = served.model.clone();
        let g = &served.gallery;
        let metric = query.metric.unwrap_or(model.metric());

        // Filters, checked against the catalogue so that a typo is an error, not an empty answer.
        let mut wanted_identities = HashSet::new();
        for &id in &query.identity_ids {
            if !g.has_identity(id) {
                self.datasets.identity(id)?;
            }
            wanted_identities.insert(id);
        }
        let mut wanted_datasets = HashSet::new();
        for name in &query.datasets {
            match g.dataset_index(name) {
                Some(i) => {
                    wanted_datasets.insert(i);
                }
                None => {
                    if !self.datasets.datasets()?.iter().any(|d| &d.name == name) {
                        return Err(RankingError::DatasetNotFound(name.clone()));
                    }
                }
            }
        }
        if !query.datasets.is_empty() && wanted_datasets.is_empty() {
            // Known datasets with nothing embedded: nothing can match.
            return Ok(Ranked {
                results: Vec::new(),
                model_id: model.id().to_string(),
                metric,
                mode: SearchMode::Exact,
            });
        }

        let probe = self.probe(&model, Some(&served), query.face)?;
        let excluded_identity = if query.exclude_query_identity { probe.identity_id } else { None };
        // Images deleted since the gallery was read are skipped until the indexer refreshes it.
        let stale = served.version != self.store.gallery_version();
        let keep = |row: usize| {
            let r = g.row(row);
            Some(r.image_id) != probe.image_id
                && (!stale || self.still_stored(r.image_id))
                && Some(r.identity_id) != excluded_identity
                && (wanted_identities.is_empty() || wanted_identities.contains(&r.identity_id))
                && (wanted_datasets.is_empty() || wanted_datasets.contains(&r.dataset))
        };

        if query.group_by_identity {
            let results = self.grouped(g, &probe.vector, metric, k, query.threshold, &keep);
            return Ok(Ranked { results, model_id: model.id().to_string(), metric, mode: SearchMode::Exact });
        }

        let approximate = match query.mode {
            SearchMode::Exact => false,
            SearchMode::Approximate => true,
            SearchMode::Auto => g.len() >= self.indexes.approx_min(),
        };
        let mut mode = SearchMode::Exact;
        let mut hits = None;
        if approximate {
            match served.approx().filter(|a| a.metric() == metric) {
                Some(graph) => {
                    // Leaving out the query's own image needs no filtered walk.
                    let selective = stale
                        || excluded_identity.is_some()
                        || !wanted_identities.is_empty()
                        || !wanted_datasets.is_empty();
                    let found = graph.search(g, &probe.vector, k, self.ef_search, &keep, selective);
                    // A selective filter can leave the graph walk short: exact search then.
                    if found.len() == k || found.len() == g.len() {
                        mode = SearchMode::Approximate;
                        hits = Some(found);
                    }
                }
                None if metric == model.metric() => self.indexes.want_approx(&served),
                None => {}
            }
        }
        let hits = match hits {
            Some(h) => h,
            None => g.top_k(&[&probe.vector], metric, k, &|_, row| keep(row)).remove(0),
        };
        let results = hits
            .into_iter()
            .filter(|h| query.threshold.is_none_or(|t| metric.within(h.score, t)))
            .map(|h| ranked_face(g, h, 1))
            .collect();
        Ok(Ranked { results, model_id: model.id().to_string(), metric, mode })
    }

    /// The method's merge rule: every identity's score is the mean over all its (kept) images,
    /// identities sorted by it; the row's image is the identity's best one.
    fn grouped(
        &self,
        g: &gallery::Gallery,
        probe: &[f32],
        metric: Metric,
        k: usize,
        threshold: Option<f32>,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<RankedFace> {
        struct Group {
            sum: f64,
            images: u32,
            best: Hit,
        }
        let mut groups: HashMap<u64, Group> = HashMap::new();
        g.for_each_score(&[probe], metric, |_, row, score| {
            if !keep(row) {
                return;
            }
            let group =
                groups.entry(g.row(row).identity_id).or_insert(Group { sum: 0.0, images: 0, best: Hit { row, score } });
            group.sum += f64::from(score);
            group.images += 1;
            if metric.better(score, group.best.score) {
                group.best = Hit { row, score };
            }
        });
        let mut means: Vec<(Hit, u32)> = groups
            .into_values()
            .map(|g| (Hit { row: g.best.row, score: (g.sum / f64::from(g.images)) as f32 }, g.images))
            .filter(|(h, _)| threshold.is_none_or(|t| metric.within(h.score, t)))
            .collect();
        means.sort_by(|(a, _), (b, _)| {
            gallery::badness(metric, a.score).total_cmp(&gallery::badness(metric, b.score)).then(a.row.cmp(&b.row))
        });
        means.truncate(k);
        means.into_iter().map(|(h, images)| ranked_face(g, h, images)).collect()
    }

    /// Whether an image is still in the store: results never name a deleted image, also in the
    /// moment before the gallery is refreshed.
    fn still_stored(&self, image_id: u64) -> bool {
        self.store.has_image(image_id).unwrap_or(false)
    }
}

/// The answer row of a gallery hit.
fn ranked_face(g: &gallery::Gallery, hit: Hit, merged_images: u32) -> RankedFace {
    let r = g.row(hit.row);
    RankedFace {
        image_id: r.image_id,
        identity_id: r.identity_id,
        identity: g.identity_name(r.identity_id).to_string(),
        score: hit.score,
        merged_images,
    }
}
