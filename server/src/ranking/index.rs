//! The ranking indexes and how they follow the registry.
//!
//! One background thread (the indexer) owns all index building. At start and after each
//! activation it builds the active model's gallery (embedding any stored image the model has no
//! embedding for yet) and then swaps it in with one pointer store: queries hold an `Arc` of the
//! index they started with, so none sees a half-built index and none fails during a swap; until
//! the new one is ready, unpinned queries keep being answered by the previous model, and each
//! answer names the model that produced it.
//!
//! The indexer also polls the store's gallery version once a second and rebuilds stale indexes
//! (images imported and embedded, images deleted). The HNSW graph of an index is built only once
//! a query has asked for approximate search (or the gallery is large), after the exact gallery.
//! Indexes of models pinned by a request (not the active one) are built on the request's thread
//! and kept in a small cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use super::approx::{Approx, ApproxError, GraphOptions};
use super::gallery::{Gallery, GalleryBuilder};
use super::RankingError;
use crate::dataset::Datasets;
use crate::models::descriptor::Descriptor;
use crate::models::{LoadedModel, Registry};
use crate::store::{ImageRecord, Store};

/// How often the indexer looks for stale indexes.
const POLL: Duration = Duration::from_secs(1);
/// Models other than the active one kept loaded (with their galleries) at a time.
const PINNED_CACHE: usize = 4;

/// How indexes are built.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    /// Galleries at least this large are searched approximately by default.
    pub approx_min: usize,
    /// Benchmarks only: the descriptor's gallery comes from this file of f32 vectors.
    pub bench_gallery: Option<PathBuf>,
    /// How HNSW graphs are built (M, vector precision).
    pub graph: GraphOptions,
    /// Where built HNSW graphs are saved and found again after a restart (none: not saved).
    pub graph_dir: Option<PathBuf>,
}

/// A model's gallery, ready to answer queries.
pub struct Served {
    pub model: Arc<LoadedModel>,
    pub gallery: Gallery,
    /// The store's gallery version the gallery was read at.
    pub version: u64,
    approx: OnceLock<Approx>,
    wants_approx: AtomicBool,
}

impl Served {
    /// The HNSW graph, when built.
    pub fn approx(&self) -> Option<&Approx> {
        self.approx.get()
    }
}

#[derive(Default)]
struct Work {
    /// A model to build and serve (set at start and by activations).
    target: Option<String>,
    stopping: bool,
    /// Pinned models whose index went stale.
    stale_pinned: Vec<String>,
}

struct Inner {
    store: Store,
    datasets: Datasets,
    registry: Registry,
    descriptor: Arc<Descriptor>,
    options: IndexOptions,
    serving: RwLock<Option<Arc<Served>>>,
    pinned: Mutex<Vec<(String, Arc<Served>)>>,
    /// Serialises builds of pinned models, so two requests don't build the same one twice.
    pinned_build: Mutex<()>,
    loaded: Mutex<HashMap<String, Arc<LoadedModel>>>,
    work: Mutex<Work>,
    /// Set at shutdown: stops an HNSW build in progress.
    stopping: AtomicBool,
    wake: Condvar,
    ready: tokio::sync::watch::Sender<bool>,
}

/// The indexes; cheap to clone.
#[derive(Clone)]
pub struct Indexes {
    inner: Arc<Inner>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Indexes {
    /// Starts the indexer, which begins building the active model's index at once.
    pub fn start(
        store: Store,
        datasets: Datasets,
        registry: Registry,
        descriptor: Arc<Descriptor>,
        options: IndexOptions,
    ) -> Self {
        let (ready, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            datasets,
            registry,
            descriptor,
            options,
            serving: RwLock::new(None),
            pinned: Mutex::new(Vec::new()),
            pinned_build: Mutex::new(()),
            loaded: Mutex::new(HashMap::new()),
            work: Mutex::new(Work::default()),
            stopping: AtomicBool::new(false),
            wake: Condvar::new(),
            ready,
        });
        let this = Indexes { inner, thread: Arc::default() };
        this.follow_active();
        let worker = this.inner.clone();
        let handle = std::thread::Builder::new()
            .name("ranking-indexer".into())
            .spawn(move || worker.run())
            .expect("spawn the ranking indexer");
        *this.thread.lock().expect("not poisoned") = Some(handle);
        this
    }

    /// Tells the indexer to build and serve the registry's active model.
    pub fn follow_active(&self) {
        let active = match self.inner.registry.active_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the active model");
                return;
            }
        };
        let mut work = self.inner.work.lock().expect("not poisoned");
        work.target = Some(active);
        self.inner.wake.notify_all();
    }

    /// Stops the indexer and waits for it (a gallery build in progress finishes first; an HNSW
    /// build stops at once).
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.work.lock().expect("not poisoned").stopping = true;
        self.inner.wake.notify_all();
        if let Some(handle) = self.thread.lock().expect("not poisoned").take() {
            let _ = handle.join();
        }
    }

    /// True once some index serves unpinned queries; watchers (health) learn of the change.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    pub fn approx_min(&self) -> usize {
        self.inner.options.approx_min
    }

    /// The index unpinned queries use now.
    pub fn serving(&self) -> Option<Arc<Served>> {
        self.inner.serving.read().expect("not poisoned").clone()
    }

    /// The id of the model unpinned queries are answered with now.
    pub fn serving_model(&self) -> Option<String> {
        self.serving().map(|s| s.model.id().to_string())
    }

    /// The index for a request: the serving one for an empty id, else the named model's.
    /// CPU-heavy the first time a model is pinned: call from a blocking thread.
    pub fn get(&self, model_id: &str) -> Result<Arc<Served>, RankingError> {
        let serving = self.serving();
        if serving.as_ref().is_some_and(|s| s.version != self.inner.store.gallery_version()) {
            // Stale: the indexer refreshes it at once (at most once a second); this query is
            // answered from the current one.
            let _work = self.inner.work.lock().expect("not poisoned");
            self.inner.wake.notify_all();
        }
        if model_id.is_empty() {
            return serving.ok_or(RankingError::NoIndex);
        }
        if let Some(s) = serving.filter(|s| s.model.id() == model_id) {
            return Ok(s);
        }
        if let Some(s) = self.cached_pinned(model_id) {
            return Ok(s);
        }
        let _building = self.inner.pinned_build.lock().expect("not poisoned");
        if let Some(s) = self.cached_pinned(model_id) {
            return Ok(s);
        }
        let model = self.model(model_id)?;
        let served = Arc::new(self.inner.build(model)?);
        let mut pinned = self.inner.pinned.lock().expect("not poisoned");
        pinned.retain(|(id, _)| id != model_id);
        pinned.push((model_id.to_string(), served.clone()));
        if pinned.len() > PINNED_CACHE {
            pinned.remove(0);
        }
        Ok(served)
    }

    fn cached_pinned(&self, model_id: &str) -> Option<Arc<Served>> {
        let found = self
            .inner
            .pinned
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|(id, _)| id == model_id)
            .map(|(_, s)| s.clone());
        if let Some(s) = &found {
            if s.version != self.inner.store.gallery_version() {
                let mut work = self.inner.work.lock().expect("not poisoned");
                if !work.stale_pinned.iter().any(|id| id == model_id) {
                    work.stale_pinned.push(model_id.to_string());
                    self.inner.wake.notify_all();
                }
            }
        }
        found
    }

    /// Forgets a deleted model: its cached index and weights, and its saved HNSW graphs.
    pub fn forget(&self, model_id: &str) {
        self.inner.pinned.lock().expect("not poisoned").retain(|(id, _)| id != model_id);
        self.inner.loaded.lock().expect("not poisoned").remove(model_id);
        self.inner.work.lock().expect("not poisoned").stale_pinned.retain(|id| id != model_id);
        if let Some(dir) = &self.inner.options.graph_dir {
            let dir = dir.join(file_safe(model_id));
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(path = %dir.display(), "HNSW graphs of a deleted model removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove a deleted model's HNSW graphs")
                }
            }
        }
    }

    /// A registered model loaded for inference, without its gallery (for Embed and Compare).
    pub fn model(&self, model_id: &str) -> Result<Arc<LoadedModel>, RankingError> {
        if let Some(s) = self.serving().filter(|s| s.model.id() == model_id) {
            return Ok(s.model.clone());
        }
        self.inner.model(model_id)
    }

    /// Asks for the HNSW graph of `served` (built in the background; exact search meanwhile).
    pub fn want_approx(&self, served: &Served) {
        if served.approx.get().is_none() && !served.wants_approx.swap(true, Ordering::AcqRel) {
            let _work = self.inner.work.lock().expect("not poisoned");
            self.inner.wake.notify_all();
        }
    }
}

impl Inner {
    fn model(&self, model_id: &str) -> Result<Arc<LoadedModel>, RankingError> {
        if let Some(m) = self.loaded.lock().expect("not poisoned").get(model_id) {
            return Ok(m.clone());
        }
        let loaded = Arc::new(self.registry.load(model_id, &self.descriptor)?);
        let mut cache = self.loaded.lock().expect("not poisoned");
        if cache.len() > PINNED_CACHE {
            cache.clear();
        }
        cache.insert(model_id.to_string(), loaded.clone());
        Ok(loaded)
    }

    /// Reads (and for trained models first completes) a model's gallery.
    fn build(&self, model: Arc<LoadedModel>) -> Result<Served, RankingError> {
        let started = Instant::now();
        if let Some(path) =
            self.options.bench_gallery.as_ref().filter(|_| model.id() == crate::models::descriptor::MODEL_ID)
        {
            let version = self.store.gallery_version();
            let gallery = bench_gallery(path, model.dim())?;
            tracing::info!(path = %path.display(), images = gallery.len(), "benchmark gallery loaded");
            return Ok(self.served(model, gallery, version));
        }
        let images: Vec<ImageRecord> = self.store.images_from(0).collect::<Result<_, _>>()?;
        // Read before the embeddings: a change made while they are read leaves this gallery
        // stale, never marked fresh without it.
        let version = self.store.gallery_version();
        let mut vectors = Vec::with_capacity(images.len());
        let mut missing = Vec::new();
        for image in &images {
            let vector = self.store.embedding(model.id(), image.id)?;
            if vector.is_none() {
                missing.push(image.id);
            }
            vectors.push(vector);
        }
        // A trained model embeds the images it has not seen yet (after an activation: all).
        let embedded: HashMap<u64, Vec<f32>> =
            model.embed_stored(&self.store, &self.datasets, &missing)?.into_iter().collect();
        let mut names: HashMap<u64, String> = HashMap::new();
        let mut builder = GalleryBuilder::new(model.dim());
        for (image, vector) in images.iter().zip(&vectors) {
            let Some(vector) = vector.as_ref().or_else(|| embedded.get(&image.id)) else { continue };
            if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(image.identity_id) {
                let record = self.store.identity(image.identity_id)?;
                slot.insert(record.map(|r| r.name).unwrap_or_default());
            }
            builder.push(image.id, image.identity_id, &names[&image.identity_id], &image.dataset, vector);
        }
        let gallery = builder.build();
        tracing::info!(
            model = model.id(),
            images = gallery.len(),
            embedded_now = embedded.len(),
            ms = started.elapsed().as_millis() as u64,
            "ranking gallery built"
        );
        crate::allocator::release_unused();
        Ok(self.served(model, gallery, version))
    }

    fn served(&self, model: Arc<LoadedModel>, gallery: Gallery, version: u64) -> Served {
        let wants = gallery.len() >= self.options.approx_min;
        Served { model, gallery, version, approx: OnceLock::new(), wants_approx: AtomicBool::new(wants) }
    }

    fn serving(&self) -> Option<Arc<Served>> {
        self.serving.read().expect("not poisoned").clone()
    }

    /// The indexer thread.
    fn run(self: Arc<Self>) {
        let mut last_stale_build = Instant::now() - POLL;
        loop {
            let (target, stale_pinned) = {
                let mut work = self.work.lock().expect("not poisoned");
                loop {
                    if work.stopping {
                        return;
                    }
                    let approx_wanted = self.serving().is_some_and(|s| needs_approx(&s))
                        || self.pinned.lock().expect("not poisoned").iter().any(|(_, s)| needs_approx(s));
                    if work.target.is_some() || !work.stale_pinned.is_empty() || approx_wanted {
                        break;
                    }
                    let stale = self.serving().is_some_and(|s| s.version != self.store.gallery_version());
                    if stale && last_stale_build.elapsed() >= POLL {
                        break;
                    }
                    work = self.wake.wait_timeout(work, POLL).expect("not poisoned").0;
                }
                (work.target.take(), std::mem::take(&mut work.stale_pinned))
            };
            let span = tracing::info_span!("ranking_index");
            let _guard = span.enter();
            if let Some(id) = target {
                self.serve_model(&id);
                continue;
            }
            if let Some(s) = self.serving().filter(|s| s.version != self.store.gallery_version()) {
                if last_stale_build.elapsed() >= POLL {
                    last_stale_build = Instant::now();
                    match self.build(s.model.clone()) {
                        Ok(mut fresh) => {
                            // Keep answering approximate queries the way they were.
                            fresh.wants_approx = AtomicBool::new(s.wants_approx.load(Ordering::Acquire));
                            self.swap(fresh);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot refresh the ranking gallery"),
                    }
                    continue;
                }
            }
            for id in stale_pinned {
                let model = self
                    .pinned
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .find(|(p, _)| *p == id)
                    .map(|(_, s)| s.model.clone());
                if let Some(model) = model {
                    match self.build(model) {
                        Ok(fresh) => {
                            let mut pinned = self.pinned.lock().expect("not poisoned");
                            if let Some(slot) = pinned.iter_mut().find(|(p, _)| *p == id) {
                                slot.1 = Arc::new(fresh);
                            }
                        }
                        Err(e) => tracing::error!(model = %id, error = %e, "cannot refresh a pinned gallery"),
                    }
                }
            }
            let wanting: Vec<Arc<Served>> = self
                .serving()
                .into_iter()
                .chain(self.pinned.lock().expect("not poisoned").iter().map(|(_, s)| s.clone()))
                .filter(|s| needs_approx(s))
                .collect();
            for s in wanting {
                match self.graph_for(&s) {
                    Ok(graph) => {
                        let _ = s.approx.set(graph);
                    }
                    Err(ApproxError::Stopped) => return,
                    Err(e) => {
                        // Not asked for again for this gallery: its queries are answered exactly.
                        s.wants_approx.store(false, Ordering::Release);
                        tracing::error!(model = s.model.id(), error = %e, "approximate search stays off");
                    }
                }
            }
        }
    }

    /// The HNSW graph of a gallery: the one saved for exactly this gallery if there is one,
    /// else built (minutes for a million rows) and saved, replacing the model's older graphs.
    fn graph_for(&self, s: &Served) -> Result<Approx, ApproxError> {
        let (metric, options) = (s.model.metric(), self.options.graph);
        let started = Instant::now();
        let path = self.options.graph_dir.as_ref().map(|dir| {
            let name = format!(
                "{metric:?}-m{}-{}-{}.usearch",
                options.connections(),
                options.precision,
                &s.gallery.fingerprint()[..24]
            );
            dir.join(file_safe(s.model.id())).join(name.to_lowercase())
        });
        if let Some(path) = path.as_ref().filter(|p| p.exists()) {
            match Approx::load(path, &s.gallery, metric, options) {
                Ok(graph) => {
                    tracing::info!(
                        model = s.model.id(),
                        images = s.gallery.len(),
                        path = %path.display(),
                        ms = started.elapsed().as_millis() as u64,
                        "HNSW graph loaded"
                    );
                    return Ok(graph);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read a saved HNSW graph; building it again")
                }
            }
        }
        let graph = Approx::build(&s.gallery, metric, options, &self.stopping)?;
        tracing::info!(
            model = s.model.id(),
            images = s.gallery.len(),
            ms = started.elapsed().as_millis() as u64,
            "HNSW graph built"
        );
        let Some(path) = &path else { return Ok(graph) };
        if let Err(e) = graph.save(path) {
            tracing::warn!(error = %e, "cannot save the HNSW graph; it is built again after a restart");
            return Ok(graph);
        }
        remove_older_graphs(path);
        // Served from the saved file: one block of memory in huge pages, faster to search
        // than the graph as built (see `Approx::load`).
        match Approx::load(path, &s.gallery, metric, options) {
            Ok(saved) => Ok(saved),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the HNSW graph just saved");
                Ok(graph)
            }
        }
    }

    /// Builds the index of `id` and serves it. A model that cannot be loaded leaves the current
    /// index in place; with none at all, the descriptor is served instead.
    fn serve_model(&self, id: &str) {
        let built = self.model(id).and_then(|m| self.build(m));
        match built {
            Ok(served) => self.swap(served),
            Err(e) => {
                tracing::error!(model = id, error = %e, "cannot build the ranking index of the active model");
                if self.serving().is_none() {
                    let descriptor = Arc::new(LoadedModel::descriptor(self.descriptor.clone()));
                    match self.build(descriptor) {
                        Ok(served) => self.swap(served),
                        Err(e) => tracing::error!(error = %e, "cannot build the descriptor's ranking index"),
                    }
                }
            }
        }
    }

    fn swap(&self, served: Served) {
        let id = served.model.id().to_string();
        let previous = self.serving.write().expect("not poisoned").replace(Arc::new(served));
        if previous.as_ref().map(|p| p.model.id()) != Some(id.as_str()) {
            tracing::info!(model = %id, "ranking now serves this model");
        }
        self.ready.send_replace(true);
    }
}

/// A gallery of `dim`-float vectors read from a file (`--rank-bench-gallery`).
fn bench_gallery(path: &Path, dim: usize) -> Result<Gallery, RankingError> {
    let bad = |why: String| RankingError::BenchGallery(format!("{}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if bytes.is_empty() || bytes.len() % (4 * dim) != 0 {
        return Err(bad(format!("{} bytes is not a whole number of {dim}-float vectors", bytes.len())));
    }
    let mut builder = GalleryBuilder::new(dim);
    let mut vector = vec![0f32; dim];
    for (row, chunk) in bytes.chunks_exact(4 * dim).enumerate() {
        for (v, b) in vector.iter_mut().zip(chunk.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let identity = row as u64 / 5 + 1;
        if !builder.push(row as u64 + 1, identity, "", "bench", &vector) {
            return Err(bad(format!("vector {} is not finite", row + 1)));
        }
    }
    Ok(builder.build())
}

/// A model id as a directory name: `gaml/3` is `gaml-3`, as in the models tree.
fn file_safe(model_id: &str) -> String {
    model_id
        .chars()
        .map(|c| match c {
            '/' => '-',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '.' => c,
            _ => '_',
        })
        .collect()
}

/// Removes the saved graphs of a model's earlier galleries and other settings (and leftovers
/// of interrupted saves) from its directory, keeping `kept`.
fn remove_older_graphs(kept: &Path) {
    let Some(dir) = kept.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path != kept && (name.ends_with(".usearch") || name.ends_with(".tmp")) {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "older HNSW graph removed"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove an older HNSW graph"),
            }
        }
    }
}

fn needs_approx(s: &Served) -> bool {
    s.wants_approx.load(Ordering::Acquire) && s.approx.get().is_none() && !s.gallery.is_empty()
}
