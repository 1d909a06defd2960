//! Crowd labeling: annotators get pairs under leases, vote similar or dissimilar, and the third
//! counted vote of a pair fixes its 2-of-3 majority label. The server enforces every rule: three
//! different annotators per pair, never more leases than votes still needed, a minimum time
//! between hand-out and vote, leases that expire, retries that count once.
//!
//! Who holds which task lives in memory (it is rebuilt empty after a restart: open leases simply
//! lapse); votes, labels and annotator records live in the store, and a vote is acknowledged only
//! once a group commit has put it on disk.

pub mod agreement;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::Role;
use crate::dataset::{DatasetError, Datasets};
use crate::store::{
    now_millis, AnnotatorRecord, ExampleRecord, GroupCommit, ImageRecord, InstructionsRecord, LabelRecord, PairRecord,
    Store, StoreError, UserRecord, VoteEffect, VoteRecord, BATCH_OPEN, PAIR_PENDING,
};

/// `VoteChoice` numbers of the API.
pub const SIMILAR: i32 = 1;
pub const DISSIMILAR: i32 = 2;
/// Votes that fix a label.
pub const VOTES_PER_PAIR: usize = 3;
/// Ids reserved from the store at a time for leases and votes.
const ID_BLOCK: u64 = 1024;
/// Face JPEGs kept for tasks (about 6 KB each); the cache starts over when full.
const FACE_CACHE: usize = 8192;
/// JPEG quality of the faces shown to annotators.
const FACE_QUALITY: u8 = 90;

#[derive(Debug, Clone)]
pub struct LabelingConfig {
    /// Votes sooner than this after the hand-out are rejected.
    pub min_answer: Duration,
    /// A task not voted on within this time goes back to the pool.
    pub lease: Duration,
    /// Tasks one annotator may hold at once (2 lets a client prefetch the next pair).
    pub max_leases_per_annotator: usize,
    /// Every n-th task of an annotator is a gold pair it has not answered, when one exists; 0 = never.
    pub gold_every: u64,
}

impl Default for LabelingConfig {
    fn default() -> Self {
        LabelingConfig {
            min_answer: Duration::from_millis(1000),
            lease: Duration::from_secs(120),
            max_leases_per_annotator: 2,
            gold_every: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabelingError {
    #[error("you are disabled for labeling; ask a researcher")]
    Disabled,
    #[error("no task with lease {0} is yours; ask for a new task")]
    UnknownLease(u64),
    #[error("lease {0} expired; the pair went back to the pool, ask for a new task")]
    LeaseExpired(u64),
    #[error(
        "vote too fast: {elapsed_ms} ms after the pair was shown (or after your previous answer, for a pair \
         fetched ahead); look at both faces for at least {min_ms} ms, then vote again with the same lease"
    )]
    TooFast { elapsed_ms: u64, min_ms: u64 },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no batch with id {0}")]
    BatchNotFound(u64),
    #[error("batch {0} is closed; open it to label its pairs")]
    BatchClosed(u64),
    #[error("no image with id {0}")]
    ImageNotFound(u64),
    #[error("no user with id {0}")]
    UserNotFound(u64),
    #[error("user {0} is not an annotator")]
    NotAnnotator(u64),
    #[error(
        "no labeling instructions set: a researcher sets them, with a similar and a dissimilar example pair, \
         with `facesim labeling instructions set`; tasks are handed out after that"
    )]
    NoInstructions,
    #[error(transparent)]
    Dataset(DatasetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DatasetError> for LabelingError {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::ImageNotFound(id) => LabelingError::ImageNotFound(id),
            DatasetError::Store(e) => LabelingError::Store(e),
            other => LabelingError::Dataset(other),
        }
    }
}

/// A hand-out of one pair to one annotator.
#[derive(Debug, Clone)]
struct Lease {
    id: u64,
    pair_id: u64,
    user_id: u64,
    batch_id: u64,
    gold: bool,
    issued_millis: i64,
    issued: Instant,
}

/// A proposed pair that still needs votes.
#[derive(Debug, Default)]
struct Slot {
    batch_id: u64,
    /// The pair's two images, so that handing it out needs no store read.
    images: (u64, u64),
    /// Counted votes: (annotator, choice).
    votes: Vec<(u64, i32)>,
    leases: Vec<u64>,
}

/// Ids handed out from a block reserved in the store.
#[derive(Debug, Default)]
struct IdBlock {
    next: u64,
    end: u64,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<u64, Slot>,
    /// Gold pairs and who answered them.
    gold: BTreeMap<u64, HashSet<u64>>,
    leases: HashMap<u64, Lease>,
    user_leases: HashMap<u64, Vec<u64>>,
    /// When each annotator last answered (a vote or a skip): the 1-second rule counts from the
    /// later of that and the lease, so a task fetched ahead cannot be answered at once.
    last_answer: HashMap<u64, Instant>,
    served: HashMap<u64, u64>,
    skipped: HashSet<(u64, u64)>,
    disabled: HashSet<u64>,
    batch_open: HashMap<u64, bool>,
    /// Pairs still needing votes per batch.
    batch_pending: HashMap<u64, u64>,
    lease_ids: IdBlock,
    vote_ids: IdBlock,
}

/// A task handed to an annotator.
#[derive(Debug, Clone)]
pub struct Task {
    pub lease_id: u64,
    pub pair_id: u64,
    pub batch_id: u64,
    /// The two face crops as JPEG.
    pub face_a: Arc<Vec<u8>>,
    pub face_b: Arc<Vec<u8>>,
    pub lease_millis: i64,
    pub expire_millis: i64,
    pub remaining_in_batch: u64,
}

/// An example pair of the instructions with its faces.
#[derive(Debug, Clone)]
pub struct Example {
    pub image_a: u64,
    pub image_b: u64,
    pub face_a: Arc<Vec<u8>>,
    pub face_b: Arc<Vec<u8>>,
    pub explanation: String,
}

#[derive(Debug, Clone)]
pub struct Instructions {
    pub text: String,
    pub similar: Vec<Example>,
    pub dissimilar: Vec<Example>,
    pub min_answer_millis: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnnotatorStats {
    pub user_id: u64,
    pub name: String,
    pub enabled: bool,
    pub votes: u64,
    pub votes_today: u64,
    pub rejected_too_fast: u64,
    pub skips: u64,
    pub gold_accuracy: f64,
    pub gold_answered: u64,
    pub majority_agreement: f64,
    pub median_answer_seconds: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchProgress {
    pub batch_id: u64,
    pub pairs_by_votes: [u64; 4],
    pub labeled_similar: u64,
    pub labeled_dissimilar: u64,
    pub active_leases: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    pub complete_pairs: u64,
    pub fleiss_kappa: f64,
    pub krippendorff_alpha: f64,
    pub unanimous_share: f64,
}

/// A gold pair to add.
#[derive(Debug, Clone, Copy)]
pub struct NewGold {
    pub image_a: u64,
    pub image_b: u64,
    pub answer: i32,
}

#[derive(Clone)]
pub struct Labeling {
    store: Store,
    datasets: Datasets,
    config: LabelingConfig,
    commit: GroupCommit,
    state: Arc<Mutex<State>>,
    faces: Arc<Mutex<HashMap<u64, Arc<Vec<u8>>>>>,
    /// Whether instructions exist: annotators see them (with a similar and a dissimilar
    /// example) before any task, as the method asks.
    instructed: Arc<std::sync::atomic::AtomicBool>,
}

fn choice_ok(choice: i32) -> bool {
    choice == SIMILAR || choice == DISSIMILAR
}

/// The label of three counted votes.
fn label_of(pair: u64, batch: u64, votes: &[(u64, i32)]) -> LabelRecord {
    let similar = votes.iter().filter(|v| v.1 == SIMILAR).count() as u32;
    let dissimilar = votes.len() as u32 - similar;
    LabelRecord {
        pair_id: pair,
        batch_id: batch,
        majority: if similar > dissimilar { SIMILAR } else { DISSIMILAR },
        similar_votes: similar,
        dissimilar_votes: dissimilar,
        label_millis: now_millis(),
    }
}

impl State {
    fn take_id(&mut self, which: &str, store: &Store) -> Result<u64, StoreError> {
        let block = if which == "leases" { &mut self.lease_ids } else { &mut self.vote_ids };
        if block.next == block.end {
            block.next = store.reserve_ids(which, ID_BLOCK)?;
            block.end = block.next + ID_BLOCK;
        }
        block.next += 1;
        Ok(block.next - 1)
    }

    fn drop_lease(&mut self, lease_id: u64) -> Option<Lease> {
        let lease = self.leases.remove(&lease_id)?;
        if let Some(held) = self.user_leases.get_mut(&lease.user_id) {
            held.retain(|&l| l != lease_id);
        }
        if let Some(slot) = self.slots.get_mut(&lease.pair_id) {
            slot.leases.retain(|&l| l != lease_id);
        }
        Some(lease)
    }

    /// Drops the leases that expired.
    /// The state the store implies: open batches, pending pairs with their counted votes, gold
    /// pairs with who answered them, disabled annotators. Leases start empty.
    fn load(store: &Store) -> Result<State, LabelingError> {
        let mut state = State::default();
        for batch in store.all_batches()? {
            state.batch_open.insert(batch.id, batch.state == BATCH_OPEN);
        }
        for pair in store.pairs_from(0) {
            let pair = pair?;
            if pair.gold_answer != 0 {
                let answered_by = store.votes_of_pair(pair.id)?.into_iter().map(|v| v.annotator_id).collect();
                state.gold.insert(pair.id, answered_by);
            } else if pair.state == PAIR_PENDING {
                let votes = store.votes_of_pair(pair.id)?;
                let counted = votes.into_iter().filter(|v| v.counted).map(|v| (v.annotator_id, v.choice)).collect();
                state.add_slot(&pair, counted);
            }
        }
        for annotator in store.annotators()? {
            if annotator.disabled {
                state.disabled.insert(annotator.user_id);
            }
        }
        Ok(state)
    }

    fn expire(&mut self, lease_time: Duration) {
        let now = Instant::now();
        let expired: Vec<u64> =
            self.leases.values().filter(|l| now.duration_since(l.issued) >= lease_time).map(|l| l.id).collect();
        for id in expired {
            self.drop_lease(id);
        }
    }

    fn add_slot(&mut self, pair: &PairRecord, votes: Vec<(u64, i32)>) {
        let slot = Slot { batch_id: pair.batch_id, images: (pair.image_a, pair.image_b), votes, leases: vec![] };
        if slot.votes.len() < VOTES_PER_PAIR && self.slots.insert(pair.id, slot).is_none() {
            *self.batch_pending.entry(pair.batch_id).or_default() += 1;
        }
    }

    fn remove_slot(&mut self, pair: u64) {
        if let Some(slot) = self.slots.remove(&pair) {
            for lease in slot.leases {
                self.drop_lease(lease);
            }
            if let Some(n) = self.batch_pending.get_mut(&slot.batch_id) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Labeling {
    /// Rebuilds the labeling state from the store and starts the group commit.
    pub fn load(store: Store, datasets: Datasets, config: LabelingConfig) -> Result<Self, LabelingError> {
        let state = State::load(&store)?;
        let instructed = Arc::new(std::sync::atomic::AtomicBool::new(store.instructions()?.is_some()));
        let commit = GroupCommit::start(store.clone());
        Ok(Labeling {
            store,
            datasets,
            config,
            commit,
            state: Arc::new(Mutex::new(state)),
            faces: Arc::default(),
            instructed,
        })
    }

    /// Waits until everything acknowledged so far is on disk. After a failed write of a vote
    /// group, the in-memory state (which had taken those votes) is rebuilt from the store, and
    /// the error is returned.
    async fn commit(&self) -> Result<(), LabelingError> {
        let committed = self.commit.commit().await;
        if self.commit.take_lost() {
            let mut state = self.lock();
            tracing::error!("a group of votes was not written; rebuilding the labeling state from the store");
            *state = State::load(&self.store)?;
        }
        Ok(committed?)
    }

    /// Writes what is pending and stops the group commit. Called when the server shuts down.
    pub async fn shutdown(&self) {
        self.commit.shutdown().await;
    }

    pub fn config(&self) -> &LabelingConfig {
        &self.config
    }

    /// The face crop of an image as a JPEG for annotators: at full size, a sixth of the PNG's
    /// bytes, encoded once and cached.
    fn face_jpeg(&self, image_id: u64) -> Result<Arc<Vec<u8>>, LabelingError> {
        if let Some(jpeg) = self.faces.lock().expect("not poisoned").get(&image_id) {
            return Ok(jpeg.clone());
        }
        let jpeg = Arc::new(crate::dataset::encode_jpeg(&self.datasets.face(image_id)?, FACE_QUALITY));
        let mut cache = self.faces.lock().expect("not poisoned");
        if cache.len() >= FACE_CACHE {
            cache.clear();
        }
        cache.insert(image_id, jpeg.clone());
        Ok(jpeg)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// New batches of a proposal: their pairs join the pool.
    pub fn add_batches(&self, batch_ids: &[u64]) -> Result<(), LabelingError> {
        let mut fresh = Vec::new();
        for &batch in batch_ids {
            let record = self.store.batch(batch)?.ok_or(LabelingError::BatchNotFound(batch))?;
            let (pairs, _) = self.store.pairs_page(batch, 0, usize::MAX)?;
            fresh.push((batch, record.state == BATCH_OPEN, pairs));
        }
        let mut state = self.lock();
        for (batch, open, pairs) in fresh {
            state.batch_open.insert(batch, open);
            for pair in pairs.into_iter().filter(|p| p.state == PAIR_PENDING) {
                state.add_slot(&pair, Vec::new());
            }
        }
        Ok(())
    }

    /// A batch was opened or closed. Leases on a closed batch's pairs stay valid until used.
    pub fn set_batch_open(&self, batch: u64, open: bool) {
        self.lock().batch_open.insert(batch, open);
    }

    /// Pairs removed with their images leave the pool.
    pub fn forget_pairs(&self, pairs: &[u64]) {
        let mut state = self.lock();
        for &pair in pairs {
            state.remove_slot(pair);
            state.gold.remove(&pair);
            let held: Vec<u64> = state.leases.values().filter(|l| l.pair_id == pair).map(|l| l.id).collect();
            for lease in held {
                state.drop_lease(lease);
            }
        }
    }

    /// Hands the annotator a task: one it already holds when it holds the most it may, else a gold
    /// pair now and then, else the first pair (in proposal order) of an open batch that it has
    /// not voted on and that needs more votes than it has leases out. `None` when there is none.
    pub fn next_task(&self, user_id: u64, batch_filter: u64) -> Result<Option<Task>, LabelingError> {
        if !self.instructed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LabelingError::NoInstructions);
        }
        if batch_filter != 0 && self.store.batch(batch_filter)?.is_none() {
            return Err(LabelingError::BatchNotFound(batch_filter));
        }
        const ATTEMPTS: usize = 3;
        for attempt in 1.. {
            let (lease, images, remaining) = {
                let mut state = self.lock();
                if state.disabled.contains(&user_id) {
                    return Err(LabelingError::Disabled);
                }
                if batch_filter != 0 && state.batch_open.get(&batch_filter) != Some(&true) {
                    return Err(LabelingError::BatchClosed(batch_filter));
                }
                state.expire(self.config.lease);
                let held = state.user_leases.get(&user_id).cloned().unwrap_or_default();
                let lease = if held.len() >= self.config.max_leases_per_annotator.max(1) {
                    state.leases[&held[0]].clone()
                } else {
                    match self.pick(&state, user_id, batch_filter, &held) {
                        Some((pair_id, batch_id, gold)) => {
                            let lease = Lease {
                                id: state.take_id("leases", &self.store)?,
                                pair_id,
                                user_id,
                                batch_id,
                                gold,
                                issued_millis: now_millis(),
                                issued: Instant::now(),
                            };
                            state.leases.insert(lease.id, lease.clone());
                            state.user_leases.entry(user_id).or_default().push(lease.id);
                            if let Some(slot) = state.slots.get_mut(&pair_id) {
                                slot.leases.push(lease.id);
                            }
                            *state.served.entry(user_id).or_default() += 1;
                            lease
                        }
                        None => return Ok(None),
                    }
                };
                let images = state.slots.get(&lease.pair_id).map(|slot| slot.images);
                let remaining = state.batch_pending.get(&lease.batch_id).copied().unwrap_or(0);
                (lease, images, remaining)
            };
            let (image_a, image_b) = match images {
                Some(images) => images,
                // Gold pairs have no slot.
                None => {
                    let pair = self.store.pair(lease.pair_id)?;
                    let pair = pair.ok_or(StoreError::Missing { tree: "pairs", id: lease.pair_id })?;
                    (pair.image_a, pair.image_b)
                }
            };
            let faces = self.face_jpeg(image_a).and_then(|a| Ok((a, self.face_jpeg(image_b)?)));
            let (face_a, face_b) = match faces {
                Ok(faces) => faces,
                // An image of the pair was deleted while the lease was handed out (the deletion
                // withdraws its pairs right after the store commits): withdraw it here, pick again.
                Err(LabelingError::ImageNotFound(_)) if attempt < ATTEMPTS => {
                    self.forget_pairs(&[lease.pair_id]);
                    continue;
                }
                Err(e) => return Err(e),
            };
            return Ok(Some(Task {
                lease_id: lease.id,
                pair_id: lease.pair_id,
                batch_id: lease.batch_id,
                face_a,
                face_b,
                lease_millis: lease.issued_millis,
                expire_millis: lease.issued_millis + self.config.lease.as_millis() as i64,
                remaining_in_batch: remaining,
            }));
        }
        unreachable!("the loop returns")
    }

    fn pick(&self, state: &State, user: u64, batch_filter: u64, held: &[u64]) -> Option<(u64, u64, bool)> {
        let holds = |pair: u64| held.iter().any(|l| state.leases.get(l).is_some_and(|l| l.pair_id == pair));
        let served = state.served.get(&user).copied().unwrap_or(0);
        if self.config.gold_every > 0 && (served + 1) % self.config.gold_every == 0 {
            if let Some((&id, _)) = state.gold.iter().find(|(id, answered)| !answered.contains(&user) && !holds(**id)) {
                return Some((id, 0, true));
            }
        }
        state
            .slots
            .iter()
            .find(|(&id, slot)| {
                (batch_filter == 0 || slot.batch_id == batch_filter)
                    && state.batch_open.get(&slot.batch_id) == Some(&true)
                    && slot.votes.len() + slot.leases.len() < VOTES_PER_PAIR
                    && !slot.votes.iter().any(|v| v.0 == user)
                    && !holds(id)
                    && !state.skipped.contains(&(user, id))
            })
            .map(|(&id, slot)| (id, slot.batch_id, false))
    }

    /// Records a vote; `Ok(false)` when the lease had voted already (a retry). Returns once the
    /// vote is on disk.
    pub async fn submit_vote(&self, user_id: u64, lease_id: u64, choice: i32) -> Result<bool, LabelingError> {
        if !choice_ok(choice) {
            return Err(LabelingError::InvalidRequest(format!("choice must be SIMILAR or DISSIMILAR, got {choice}")));
        }
        let recorded = self.record(user_id, lease_id, choice)?;
        // Also a retry waits for the commit: its first try may still be queued.
        self.commit().await?;
        if recorded.is_none() {
            return match self.store.vote_of_lease(lease_id)? {
                Some(vote) if vote.annotator_id == user_id => Ok(false),
                _ => Err(LabelingError::UnknownLease(lease_id)),
            };
        }
        Ok(true)
    }

    /// The synchronous part of a vote: checks, state change and queueing for the next commit
    /// group, under the lock. `None` when the lease is not live.
    fn record(&self, user_id: u64, lease_id: u64, choice: i32) -> Result<Option<()>, LabelingError> {
        let mut state = self.lock();
        let Some(lease) = state.leases.get(&lease_id).filter(|l| l.user_id == user_id).cloned() else {
            return Ok(None);
        };
        if state.disabled.contains(&user_id) {
            return Err(LabelingError::Disabled);
        }
        if lease.issued.elapsed() >= self.config.lease {
            state.drop_lease(lease_id);
            return Err(LabelingError::LeaseExpired(lease_id));
        }
        // The time this annotator has had for this pair: since the lease, or since its previous
        // answer when that came later (the pair was fetched ahead while another was shown).
        let shown = state.last_answer.get(&user_id).map_or(lease.issued, |&t| t.max(lease.issued));
        let elapsed = shown.elapsed();
        if elapsed < self.config.min_answer {
            drop(state);
            self.store.update_annotator(user_id, |a| a.rejected_too_fast += 1)?;
            return Err(LabelingError::TooFast {
                elapsed_ms: elapsed.as_millis() as u64,
                min_ms: self.config.min_answer.as_millis() as u64,
            });
        }
        let vote = VoteRecord {
            id: state.take_id("votes", &self.store)?,
            pair_id: lease.pair_id,
            annotator_id: user_id,
            choice,
            lease_id,
            lease_millis: lease.issued_millis,
            vote_millis: now_millis(),
            counted: !lease.gold,
            gold: lease.gold,
        };
        let effect = if lease.gold {
            VoteEffect { pair_votes: 0, label: None }
        } else {
            let slot =
                state.slots.get(&lease.pair_id).ok_or(StoreError::Missing { tree: "pairs", id: lease.pair_id })?;
            let mut votes = slot.votes.clone();
            if votes.len() >= VOTES_PER_PAIR || votes.iter().any(|v| v.0 == user_id) {
                // Unreachable by the lease rules; refuse rather than over-count.
                return Err(LabelingError::InvalidRequest("this pair needs no further vote from you".into()));
            }
            votes.push((user_id, choice));
            let label = (votes.len() == VOTES_PER_PAIR).then(|| label_of(lease.pair_id, slot.batch_id, &votes));
            VoteEffect { pair_votes: votes.len() as u32, label }
        };
        let labeled = effect.label.is_some();
        self.commit.enqueue_vote(vote, effect);
        state.drop_lease(lease_id);
        state.last_answer.insert(user_id, Instant::now());
        if lease.gold {
            if let Some(answered) = state.gold.get_mut(&lease.pair_id) {
                answered.insert(user_id);
            }
        } else if labeled {
            state.remove_slot(lease.pair_id);
        } else if let Some(slot) = state.slots.get_mut(&lease.pair_id) {
            slot.votes.push((user_id, choice));
        }
        Ok(Some(()))
    }

    /// Gives a task back without a vote; the annotator is not offered that pair again.
    pub fn skip(&self, user_id: u64, lease_id: u64) -> Result<(), LabelingError> {
        {
            let mut state = self.lock();
            match state.leases.get(&lease_id) {
                Some(l) if l.user_id == user_id => {
                    let pair = l.pair_id;
                    state.drop_lease(lease_id);
                    state.skipped.insert((user_id, pair));
                    state.last_answer.insert(user_id, Instant::now());
                }
                _ => return Err(LabelingError::UnknownLease(lease_id)),
            }
        }
        self.store.update_annotator(user_id, |a| a.skips += 1)?;
        Ok(())
    }

    pub fn instructions(&self) -> Result<Instructions, LabelingError> {
        let record = self.store.instructions()?.ok_or(LabelingError::NoInstructions)?;
        let examples = |list: &[ExampleRecord]| -> Result<Vec<Example>, LabelingError> {
            list.iter()
                .map(|e| {
                    Ok(Example {
                        image_a: e.image_a,
                        image_b: e.image_b,
                        face_a: self.face_jpeg(e.image_a)?,
                        face_b: self.face_jpeg(e.image_b)?,
                        explanation: e.explanation.clone(),
                    })
                })
                .collect()
        };
        Ok(Instructions {
            text: record.text.clone(),
            similar: examples(&record.similar)?,
            dissimilar: examples(&record.dissimilar)?,
            min_answer_millis: self.config.min_answer.as_millis() as u32,
        })
    }

    /// Sets the instructions: text plus at least one similar and one dissimilar example.
    pub async fn set_instructions(&self, record: InstructionsRecord) -> Result<Instructions, LabelingError> {
        if record.similar.is_empty() || record.dissimilar.is_empty() {
            return Err(LabelingError::InvalidRequest(
                "instructions need at least one similar and one dissimilar example pair".into(),
            ));
        }
        if record.text.trim().is_empty() || record.text.len() > 20_000 {
            return Err(LabelingError::InvalidRequest("text must be 1 to 20000 bytes".into()));
        }
        for e in record.similar.iter().chain(&record.dissimilar) {
            if e.image_a == e.image_b {
                return Err(LabelingError::InvalidRequest(format!("an example pair shows image {} twice", e.image_a)));
            }
            self.datasets.image(e.image_a)?;
            self.datasets.image(e.image_b)?;
        }
        self.store.set_instructions(&record)?;
        self.commit().await?;
        self.instructed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.instructions()
    }

    /// Adds gold pairs (images must exist and differ); they join every annotator's stream.
    pub async fn add_gold(&self, pairs: &[NewGold]) -> Result<Vec<u64>, LabelingError> {
        if pairs.is_empty() || pairs.len() > 10_000 {
            return Err(LabelingError::InvalidRequest("give 1 to 10000 gold pairs".into()));
        }
        let mut records = Vec::with_capacity(pairs.len());
        for g in pairs {
            if !choice_ok(g.answer) {
                return Err(LabelingError::InvalidRequest(format!(
                    "gold answer must be SIMILAR or DISSIMILAR, got {}",
                    g.answer
                )));
            }
            if g.image_a == g.image_b {
                return Err(LabelingError::InvalidRequest(format!("a gold pair shows image {} twice", g.image_a)));
            }
            let (a, b) =
                (self.datasets.image(g.image_a.min(g.image_b))?, self.datasets.image(g.image_a.max(g.image_b))?);
            records.push(PairRecord {
                image_a: a.id,
                image_b: b.id,
                identity_a: a.identity_id,
                identity_b: b.identity_id,
                state: PAIR_PENDING,
                gold_answer: g.answer,
                ..Default::default()
            });
        }
        let ids = self.store.insert_gold_pairs(&records)?;
        self.commit().await?;
        let mut state = self.lock();
        for id in &ids {
            state.gold.insert(*id, HashSet::new());
        }
        Ok(ids)
    }

    fn annotator_user(&self, user_id: u64) -> Result<UserRecord, LabelingError> {
        let user: UserRecord = self.store.user(user_id)?.ok_or(LabelingError::UserNotFound(user_id))?;
        if user.role != Role::Annotator as i32 {
            return Err(LabelingError::NotAnnotator(user_id));
        }
        Ok(user)
    }

    /// Disables an annotator (its counted votes stop counting, their pairs need votes again, its
    /// leases end) or enables it again (earlier votes stay excluded).
    pub async fn set_enabled(&self, user_id: u64, enabled: bool) -> Result<AnnotatorStats, LabelingError> {
        self.annotator_user(user_id)?;
        if enabled {
            self.store.update_annotator(user_id, |a| a.disabled = false)?;
            self.lock().disabled.remove(&user_id);
        } else {
            self.store.update_annotator(user_id, |a| a.disabled = true)?;
            // Under the lock, with the queued votes written first, so that no vote decided on
            // the old counts lands after the exclusion.
            let mut state = self.lock();
            state.disabled.insert(user_id);
            let held = state.user_leases.remove(&user_id).unwrap_or_default();
            for lease in held {
                state.drop_lease(lease);
            }
            self.commit.apply_pending()?;
            for pair_id in self.store.exclude_votes_of(user_id)? {
                if let Some(pair) = self.store.pair(pair_id)? {
                    let votes = self.store.votes_of_pair(pair_id)?;
                    let counted: Vec<(u64, i32)> =
                        votes.into_iter().filter(|v| v.counted).map(|v| (v.annotator_id, v.choice)).collect();
                    match state.slots.get_mut(&pair.id) {
                        Some(slot) => slot.votes = counted,
                        None => state.add_slot(&pair, counted),
                    }
                }
            }
        }
        self.commit().await?;
        self.stats(user_id)
    }

    /// One annotator's statistics.
    pub fn stats(&self, user_id: u64) -> Result<AnnotatorStats, LabelingError> {
        let user = self.annotator_user(user_id)?;
        let record: AnnotatorRecord = self.store.annotator(user_id)?;
        let votes = self.store.votes_of_annotator(user_id)?;
        let day = now_millis().div_euclid(86_400_000);
        let mut stats = AnnotatorStats {
            user_id,
            name: user.name,
            enabled: !record.disabled,
            rejected_too_fast: record.rejected_too_fast,
            skips: record.skips,
            ..Default::default()
        };
        let (mut gold_right, mut agree, mut on_labeled) = (0u64, 0u64, 0u64);
        let mut answer_millis: Vec<i64> = Vec::with_capacity(votes.len());
        for vote in &votes {
            answer_millis.push(vote.vote_millis - vote.lease_millis);
            if vote.gold {
                stats.gold_answered += 1;
                if self.store.pair(vote.pair_id)?.is_some_and(|p| p.gold_answer == vote.choice) {
                    gold_right += 1;
                }
                continue;
            }
            stats.votes += 1;
            if vote.vote_millis.div_euclid(86_400_000) == day {
                stats.votes_today += 1;
            }
            if let Some(label) = self.store.label(vote.pair_id)? {
                on_labeled += 1;
                if label.majority == vote.choice {
                    agree += 1;
                }
            }
        }
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        stats.gold_accuracy = share(gold_right, stats.gold_answered);
        stats.majority_agreement = share(agree, on_labeled);
        answer_millis.sort_unstable();
        if let Some(&median) = answer_millis.get(answer_millis.len() / 2) {
            stats.median_answer_seconds = median as f64 / 1000.0;
        }
        Ok(stats)
    }

    /// Statistics of the annotators with ids from `start`, in id order.
    pub fn all_stats(&self, start: u64, limit: usize) -> Result<(Vec<AnnotatorStats>, Option<u64>), LabelingError> {
        let mut out = Vec::new();
        for user in self.store.users_from(start) {
            let user = user?;
            if user.role != Role::Annotator as i32 {
                continue;
            }
            if out.len() == limit {
                return Ok((out, Some(user.id)));
            }
            out.push(self.stats(user.id)?);
        }
        Ok((out, None))
    }

    /// Where a batch stands.
    pub fn batch_progress(&self, batch_id: u64) -> Result<BatchProgress, LabelingError> {
        self.store.batch(batch_id)?.ok_or(LabelingError::BatchNotFound(batch_id))?;
        let (pairs, _) = self.store.pairs_page(batch_id, 0, usize::MAX)?;
        let mut progress = BatchProgress { batch_id, ..Default::default() };
        for pair in &pairs {
            progress.pairs_by_votes[(pair.votes as usize).min(3)] += 1;
            if let Some(label) = self.store.label(pair.id)? {
                if label.majority == SIMILAR {
                    progress.labeled_similar += 1;
                } else {
                    progress.labeled_dissimilar += 1;
                }
            }
        }
        let state = self.lock();
        progress.active_leases = state.leases.values().filter(|l| l.batch_id == batch_id && !l.gold).count() as u64;
        Ok(progress)
    }

    /// Agreement over the labeled pairs of a batch (0 = all batches): Fleiss' kappa over the
    /// complete pairs, Krippendorff's alpha over every pair with at least two counted votes.
    pub fn agreement(&self, batch_id: u64) -> Result<Agreement, LabelingError> {
        if batch_id != 0 {
            self.store.batch(batch_id)?.ok_or(LabelingError::BatchNotFound(batch_id))?;
        }
        let (pairs, _) = self.store.pairs_page(batch_id, 0, usize::MAX)?;
        let mut complete = Vec::new();
        let mut rated = Vec::new();
        for pair in pairs.iter().filter(|p| p.gold_answer == 0 && p.votes >= 2) {
            let votes = self.store.votes_of_pair(pair.id)?;
            let similar = votes.iter().filter(|v| v.counted && v.choice == SIMILAR).count() as u32;
            let dissimilar = votes.iter().filter(|v| v.counted && v.choice == DISSIMILAR).count() as u32;
            let unit = vec![similar, dissimilar];
            if similar + dissimilar == VOTES_PER_PAIR as u32 {
                complete.push(unit.clone());
            }
            rated.push(unit);
        }
        let unanimous = complete.iter().filter(|u| u.contains(&0)).count();
        Ok(Agreement {
            complete_pairs: complete.len() as u64,
            fleiss_kappa: agreement::fleiss_kappa(&complete).unwrap_or(f64::NAN),
            krippendorff_alpha: agreement::krippendorff_alpha_nominal(&rated).unwrap_or(f64::NAN),
            unanimous_share: if complete.is_empty() { 0.0 } else { unanimous as f64 / complete.len() as f64 },
        })
    }

    /// Labels in pair order.
    pub fn labels(
        &self,
        batch_id: u64,
        start: u64,
        limit: usize,
    ) -> Result<(Vec<LabelRecord>, Option<u64>), LabelingError> {
        if batch_id != 0 {
            self.store.batch(batch_id)?.ok_or(LabelingError::BatchNotFound(batch_id))?;
        }
        Ok(self.store.labels_page(batch_id, start, limit)?)
    }

    /// Votes in id order (or per pair within a batch).
    pub fn votes(
        &self,
        batch_id: u64,
        start: u64,
        limit: usize,
    ) -> Result<(Vec<VoteRecord>, Option<u64>), LabelingError> {
        if batch_id != 0 {
            self.store.batch(batch_id)?.ok_or(LabelingError::BatchNotFound(batch_id))?;
        }
        Ok(self.store.votes_page(batch_id, start, limit)?)
    }

    /// The pair of a label, for exports.
    pub fn pair(&self, pair_id: u64) -> Result<Option<PairRecord>, LabelingError> {
        Ok(self.store.pair(pair_id)?)
    }

    pub fn image(&self, id: u64) -> Result<ImageRecord, LabelingError> {
        Ok(self.datasets.image(id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_and_split() {
        let l = label_of(1, 2, &[(1, SIMILAR), (2, DISSIMILAR), (3, SIMILAR)]);
        assert_eq!((l.majority, l.similar_votes, l.dissimilar_votes), (SIMILAR, 2, 1));
        let l = label_of(1, 2, &[(1, DISSIMILAR), (2, DISSIMILAR), (3, DISSIMILAR)]);
        assert_eq!((l.majority, l.similar_votes, l.dissimilar_votes), (DISSIMILAR, 0, 3));
    }
}
