//! The training and evaluation jobs: checked and prepared on the caller's thread (so bad
//! requests fail at once with a precise error), then run on a job thread.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use facesim_metrics::{self as metrics, confidence};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::data::{self, Inputs, LabelledPair, TEST, TRAIN, VALIDATION};
use super::optim::Optimizer;
use super::resume::{self, Checkpoint, SavedPlan};
use super::{DataSource, Hyperparameters, OptimizerKind, TrainRequest, Training, TrainingError};
use crate::jobs::JobHandle;
use crate::models::descriptor;
use crate::models::siamese::{self, nets, Architecture, LossKind, Siamese};
use crate::store::{now_millis, EpochRecord, EvaluationRecord, ModelRecord, PairSetRecord, ScoresRecord};
use crate::vectors::{self, COSINE, EUCLIDEAN};

/// Fewest pairs a training run accepts: enough for every split to hold both classes.
pub const MIN_PAIRS: usize = 20;
/// Most ROC points kept with a score.
const ROC_POINTS: usize = 200;
/// Pairs per forward pass when scoring.
const SCORE_BATCH: usize = 256;

pub struct TrainingPlan {
    pub model_id: String,
    name: String,
    architecture: Architecture,
    loss: LossKind,
    hyper: Hyperparameters,
    pairs: Vec<LabelledPair>,
    split: Vec<u32>,
    vectors: Inputs,
    pub device: Device,
    data_source: String,
    batch_ids: Vec<u64>,
    pub dir: PathBuf,
    /// Where a resumed job continues from (`None`: from the start).
    resume: Option<Checkpoint>,
}

impl TrainingPlan {
    /// What a restart needs to run this plan again ([`plan_from_saved`]).
    pub fn saved(&self) -> SavedPlan {
        SavedPlan {
            model_id: self.model_id.clone(),
            name: self.name.clone(),
            architecture: self.architecture as i32,
            loss: self.loss as i32,
            hyperparameters_json: serde_json::to_string(&self.hyper).unwrap_or_default(),
            pairs: Some(pair_set(&self.pairs, &self.split)),
            pair_batch: self.pairs.iter().map(|p| p.batch_id).collect(),
            device: descriptor::device_name(&self.device),
            data_source: self.data_source.clone(),
            batch_ids: self.batch_ids.clone(),
        }
    }

    /// The epoch a resumed run continues after (0: a fresh start).
    pub fn resumes_after(&self) -> u32 {
        self.resume.as_ref().map_or(0, |c| c.epoch)
    }
}

fn pair_set(pairs: &[LabelledPair], split: &[u32]) -> PairSetRecord {
    PairSetRecord {
        image_a: pairs.iter().map(|p| p.image_a).collect(),
        image_b: pairs.iter().map(|p| p.image_b).collect(),
        target: pairs.iter().map(|p| p.target).collect(),
        split: split.to_vec(),
        pair_id: pairs.iter().map(|p| p.pair_id).collect(),
    }
}

/// Rebuilds the plan of an interrupted job from its saved plan, to continue after `checkpoint`
/// (or from the start). Fails when the job's images or their embeddings are gone.
pub fn plan_from_saved(
    training: &Training,
    dir: PathBuf,
    saved: SavedPlan,
    checkpoint: Option<Checkpoint>,
) -> Result<TrainingPlan, TrainingError> {
    let bad = |what: &str| TrainingError::Invalid(format!("the saved plan of {} has {what}", saved.model_id));
    let architecture = Architecture::from_number(saved.architecture).ok_or_else(|| bad("an unknown architecture"))?;
    let loss = LossKind::from_number(saved.loss).ok_or_else(|| bad("an unknown loss"))?;
    let hyper: Hyperparameters =
        serde_json::from_str(&saved.hyperparameters_json).map_err(|_| bad("unreadable settings"))?;
    let set = saved.pairs.clone().unwrap_or_default();
    let n = set.image_a.len();
    if [set.image_b.len(), set.target.len(), set.split.len(), set.pair_id.len(), saved.pair_batch.len()]
        .iter()
        .any(|&len| len != n)
    {
        return Err(bad("pair lists of different lengths"));
    }
    let pairs: Vec<LabelledPair> = (0..n)
        .map(|i| LabelledPair {
            image_a: set.image_a[i],
            image_b: set.image_b[i],
            target: set.target[i],
            pair_id: set.pair_id[i],
            batch_id: saved.pair_batch[i],
        })
        .collect();
    let vectors = Inputs::vectors(&training.store, &image_ids(&pairs))?;
    let device = training.device(if saved.device.starts_with("cuda") { "cuda" } else { "cpu" })?;
    Ok(TrainingPlan {
        model_id: saved.model_id,
        name: saved.name,
        architecture,
        loss,
        hyper,
        pairs,
        split: set.split,
        vectors,
        device,
        data_source: saved.data_source,
        batch_ids: saved.batch_ids,
        dir,
        resume: checkpoint,
    })
}

fn check_hyper(h: &Hyperparameters) -> Result<(), TrainingError> {
    let bad = |m: String| Err(TrainingError::Invalid(m));
    if h.epochs == 0 || h.epochs > 100_000 {
        return bad(format!("epochs must be between 1 and 100000, got {}", h.epochs));
    }
    if h.batch_size < 2 || h.batch_size > 100_000 {
        return bad(format!("batch_size must be between 2 and 100000, got {}", h.batch_size));
    }
    for (name, value) in [
        ("learning_rate", h.learning_rate),
        ("momentum", h.momentum),
        ("margin", h.loss.margin),
        ("alpha", h.loss.alpha),
        ("beta", h.loss.beta),
        ("lambda", h.loss.lambda),
        ("epsilon", h.loss.epsilon),
    ] {
        if !value.is_finite() || value < 0.0 {
            return bad(format!("{name} must be a finite number >= 0, got {value}"));
        }
    }
    if h.learning_rate <= 0.0 || h.learning_rate > 10.0 {
        return bad(format!("learning_rate must be in (0, 10], got {}", h.learning_rate));
    }
    if h.momentum >= 1.0 {
        return bad(format!("momentum must be below 1, got {}", h.momentum));
    }
    Ok(())
}

/// Fills the defaults in, with the request's settings on top.
fn hyperparameters(request: &TrainRequest, loss: LossKind) -> Result<Hyperparameters, TrainingError> {
    let o = &request.overrides;
    let mut h = Hyperparameters::defaults(request.architecture, loss);
    fn set<T: Copy>(target: &mut T, value: Option<T>) {
        if let Some(value) = value {
            *target = value;
        }
    }
    set(&mut h.epochs, o.epochs);
    set(&mut h.batch_size, o.batch_size);
    set(&mut h.learning_rate, o.learning_rate);
    set(&mut h.momentum, o.momentum);
    set(&mut h.loss.margin, o.margin);
    set(&mut h.loss.alpha, o.alpha);
    set(&mut h.loss.beta, o.beta);
    set(&mut h.loss.lambda, o.lambda);
    set(&mut h.loss.epsilon, o.epsilon);
    // No seed asked for: take one from the clock, and record it with the model.
    h.seed = o.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    check_hyper(&h)?;
    Ok(h)
}

/// The pairs of a data source, with a description for people and the batches they came from.
fn gather(training: &Training, data: &DataSource) -> Result<(Vec<LabelledPair>, String, Vec<u64>), TrainingError> {
    match data {
        DataSource::Labels(query) => {
            let pairs = data::from_labels(&training.store, query)?;
            let mut description = if query.batch_ids.is_empty() {
                "majority labels of all batches".to_string()
            } else {
                format!(
                    "majority labels of batches {}",
                    query.batch_ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                )
            };
            if query.unanimous_only {
                description.push_str(", 3-0 only");
            }
            if query.soft_labels {
                description.push_str(", soft labels");
            }
            // The batches the labels really came from (all of them when none was named), so
            // the model records which rounds of labeling it learnt from.
            let mut batches: Vec<u64> = pairs.iter().map(|p| p.batch_id).filter(|&b| b != 0).collect();
            batches.sort_unstable();
            batches.dedup();
            Ok((pairs, description, batches))
        }
        DataSource::PairList { dataset, text } => {
            if !crate::dataset::valid_dataset_name(dataset) {
                return Err(TrainingError::Invalid(format!("invalid dataset name {dataset:?}")));
            }
            if !training.datasets.datasets()?.iter().any(|d| &d.name == dataset) {
                return Err(TrainingError::NotFound(format!("no dataset named {dataset:?}")));
            }
            let listed = data::parse_pair_list(text)?;
            let (pairs, missing) = data::resolve_pair_list(&training.store, dataset, &listed)?;
            let description =
                format!("pair list on dataset {dataset:?}: {} pairs, {missing} naming images it lacks", pairs.len());
            Ok((pairs, description, Vec::new()))
        }
    }
}

pub fn plan_training(training: &Training, request: TrainRequest) -> Result<TrainingPlan, TrainingError> {
    let architecture = request.architecture;
    let loss = request.loss.unwrap_or(match architecture {
        Architecture::SiameseCnn => LossKind::Contrastive,
        Architecture::SiameseGaml => LossKind::GeometryAware,
    });
    if loss == LossKind::GeometryAware && architecture == Architecture::SiameseCnn {
        return Err(TrainingError::Invalid(
            "the geometry-aware loss compares with the input features' distance, so it needs the GAML architecture"
                .into(),
        ));
    }
    let ratios: [u32; 3] = match request.split.as_slice() {
        [] => [8, 1, 1],
        [a, b, c] if *a > 0 && *b > 0 && *c > 0 && a + b + c <= 1000 => [*a, *b, *c],
        other => {
            return Err(TrainingError::Invalid(format!(
                "split must be three positive parts train:validation:test (e.g. 8:1:1), got {other:?}"
            )))
        }
    };
    if request.name.chars().count() > 200 {
        return Err(TrainingError::Invalid("the model name is longer than 200 characters".into()));
    }
    let hyper = hyperparameters(&request, loss)?;
    let device = training.device(&request.device)?;
    let (pairs, data_source, batch_ids) = gather(training, &request.data)?;
    if pairs.len() < MIN_PAIRS {
        return Err(TrainingError::NotEnoughPairs(format!(
            "{data_source} gives {} pairs; training needs at least {MIN_PAIRS}",
            pairs.len()
        )));
    }
    let split = data::split(pairs.len(), ratios, hyper.seed);
    for (part, name) in [(TRAIN, "training"), (VALIDATION, "validation"), (TEST, "test")] {
        let same = pairs.iter().zip(&split).filter(|(p, s)| **s == part && p.same()).count();
        let total = split.iter().filter(|s| **s == part).count();
        if same == 0 || same == total {
            return Err(TrainingError::NotEnoughPairs(format!(
                "the {name} split ({total} of {} pairs) holds only one class; label more pairs of both kinds \
                 or change the split",
                pairs.len()
            )));
        }
    }
    let ids = image_ids(&pairs);
    let vectors = Inputs::vectors(&training.store, &ids)?;
    let n = training.store.next_id("models")?;
    let model_id = format!("{}/{n}", architecture.slug());
    let name = if request.name.is_empty() { model_id.clone() } else { request.name.clone() };
    let dir = training.models_dir.join(format!("{}-{n}", architecture.slug()));
    Ok(TrainingPlan {
        model_id,
        name,
        architecture,
        loss,
        hyper,
        pairs,
        split,
        vectors,
        device,
        data_source,
        batch_ids,
        dir,
        resume: None,
    })
}

enum Outcome {
    Done(Box<ModelRecord>),
    Stopped(String),
}

pub fn run_training(training: &Training, handle: JobHandle, plan: TrainingPlan) {
    let _span = tracing::info_span!("training", job = handle.id(), model = %plan.model_id).entered();
    let result = train(training, &handle, &plan);
    let ended = match result {
        Ok(Outcome::Done(model)) => {
            let message = match (&model.scores, &model.baseline) {
                (Some(s), Some(b)) => format!(
                    "model {}: test ROC-AUC {:.4}, MCC {:.4} (descriptor: {:.4}, {:.4})",
                    model.id, s.roc_auc, s.mcc, b.roc_auc, b.mcc
                ),
                _ => format!("model {}", model.id),
            };
            tracing::info!(%message, "training finished");
            handle.completed(message)
        }
        Ok(Outcome::Stopped(message)) => {
            // A server stop keeps what a restart resumes from; a user's cancel does not.
            if !handle.is_stopping() {
                resume::clear(&plan.dir);
            }
            handle.stopped(message)
        }
        Err(e) => {
            tracing::warn!(error = %e, "training failed");
            resume::clear(&plan.dir);
            handle.fail(e.to_string())
        }
    };
    if let Err(e) = ended {
        tracing::error!(error = %e, "cannot record the end of a training job");
    }
}

fn indices_of(split: &[u32], part: u32) -> Vec<usize> {
    (0..split.len()).filter(|&i| split[i] == part).collect()
}

/// The tensors of a batch of pairs: inputs of side a, of side b, targets.
fn batch_tensors(
    inputs: &Inputs,
    pairs: &[LabelledPair],
    chosen: &[usize],
    device: &Device,
) -> Result<(Tensor, Tensor, Tensor), TrainingError> {
    let a: Vec<u64> = chosen.iter().map(|&i| pairs[i].image_a).collect();
    let b: Vec<u64> = chosen.iter().map(|&i| pairs[i].image_b).collect();
    let y: Vec<f32> = chosen.iter().map(|&i| pairs[i].target).collect();
    Ok((inputs.batch(&a, device)?, inputs.batch(&b, device)?, Tensor::from_vec(y, chosen.len(), device)?))
}

/// The model's distances of the chosen pairs.
fn distances(
    model: &Siamese,
    inputs: &Inputs,
    pairs: &[LabelledPair],
    chosen: &[usize],
    device: &Device,
) -> Result<Vec<f64>, TrainingError> {
    let mut out = Vec::with_capacity(chosen.len());
    for part in chosen.chunks(SCORE_BATCH) {
        let (xa, xb, _) = batch_tensors(inputs, pairs, part, device)?;
        out.extend(model.distances(&xa, &xb)?.to_vec1::<f32>()?.into_iter().map(f64::from));
    }
    Ok(out)
}

/// The model's distances of the validation pairs and their mean loss per pair, from one
/// forward pass per batch.
fn validate(
    model: &Siamese,
    inputs: &Inputs,
    pairs: &[LabelledPair],
    chosen: &[usize],
    hyper: &Hyperparameters,
    device: &Device,
) -> Result<(Vec<f64>, f64), TrainingError> {
    let (mut out, mut loss_sum) = (Vec::with_capacity(chosen.len()), 0.0);
    for part in chosen.chunks(SCORE_BATCH) {
        let (xa, xb, y) = batch_tensors(inputs, pairs, part, device)?;
        let (d, loss) = model.distances_and_loss(&xa, &xb, &y, &hyper.loss)?;
        out.extend(d.to_vec1::<f32>()?.into_iter().map(f64::from));
        loss_sum += per_pair(model, f64::from(loss.to_scalar::<f32>()?), part.len()) * part.len() as f64;
    }
    Ok((out, loss_sum / chosen.len().max(1) as f64))
}

/// Every image of the pairs, sides a and b in turn (repeats are skipped by [`Inputs`]).
fn image_ids(pairs: &[LabelledPair]) -> Vec<u64> {
    pairs.iter().flat_map(|p| [p.image_a, p.image_b]).collect()
}

/// A batch's loss as a per-pair figure, so batches of any size compare: the geometry-aware
/// loss is a sum over the batch (as the method writes it), the others are means already.
fn per_pair(model: &Siamese, batch_loss: f64, batch: usize) -> f64 {
    match model.loss {
        LossKind::GeometryAware => batch_loss / batch.max(1) as f64,
        _ => batch_loss,
    }
}

/// Descriptor distances of the chosen pairs (the baseline).
fn descriptor_distances(vectors: &Inputs, pairs: &[LabelledPair], chosen: &[usize]) -> Vec<f64> {
    chosen
        .iter()
        .map(|&i| {
            let (a, b) = (vectors.vector(pairs[i].image_a), vectors.vector(pairs[i].image_b));
            f64::from(vectors::euclidean(a, b))
        })
        .collect()
}

/// A model's figures on scored test pairs at a threshold, with the pairs' class counts and 95%
/// intervals (stratified bootstrap, a fixed seed: the same scores give the same interval).
fn scores_of(model_id: &str, distances: &[f64], same: &[bool], threshold: f64) -> ScoresRecord {
    const SEED: u64 = 0x5c0e;
    let (similar, dissimilar) = confidence::class_counts(same);
    let auc = confidence::auc_interval(distances, same, SEED);
    let mcc = confidence::mcc_interval(distances, same, threshold, SEED);
    ScoresRecord {
        similar_pairs: similar as u64,
        dissimilar_pairs: dissimilar as u64,
        auc_low: auc.map_or(0.0, |e| e.low),
        auc_high: auc.map_or(0.0, |e| e.high),
        mcc_low: mcc.map_or(0.0, |e| e.low),
        mcc_high: mcc.map_or(0.0, |e| e.high),
        model_id: model_id.to_string(),
        roc_auc: metrics::roc_auc(distances, same).unwrap_or(0.5),
        mcc: metrics::mcc(distances, same, threshold),
        threshold,
        accuracy: metrics::accuracy(distances, same, threshold),
        roc: metrics::roc_curve(distances, same, ROC_POINTS)
            .into_iter()
            .flat_map(|(fpr, tpr, t)| [fpr as f32, tpr as f32, t as f32])
            .collect(),
    }
}

fn same_of(pairs: &[LabelledPair], chosen: &[usize]) -> Vec<bool> {
    chosen.iter().map(|&i| pairs[i].same()).collect()
}

/// Saves what a restart needs to continue after `epoch`: the weights with the optimiser's state,
/// then the checkpoint naming them (and the best epoch's weights); older files go. `None` when
/// the optimiser's state cannot be saved (candle's AdamW on a GPU): such a run starts over.
fn checkpoint(
    plan: &TrainingPlan,
    model: &Siamese,
    optimizer: &Optimizer,
    epoch: u32,
    (best_auc, best_epoch, best_file): (f64, u32, &str),
    history: &[EpochRecord],
    elapsed_seconds: f64,
) -> Result<Option<Checkpoint>, TrainingError> {
    let Some(state) = optimizer.state()? else { return Ok(None) };
    let mut tensors: std::collections::HashMap<String, Tensor> =
        model.named_vars().into_iter().map(|(name, var)| (name, var.as_tensor().clone())).collect();
    tensors.extend(state);
    let state_file = resume::state_file(epoch);
    let state_path = plan.dir.join(&state_file);
    candle_core::safetensors::save(&tensors, &state_path)?;
    resume::sync_file(&state_path)?;
    let c = Checkpoint {
        epoch,
        best_auc,
        best_epoch,
        history: history.to_vec(),
        elapsed_seconds,
        state_file,
        best_file: best_file.to_string(),
    };
    resume::write_atomic(&plan.dir.join(resume::CHECKPOINT_FILE), &prost::Message::encode_to_vec(&c))?;
    resume::remove_stale(&plan.dir, &[&c.state_file, &c.best_file]);
    Ok(Some(c))
}

fn train(training: &Training, handle: &JobHandle, plan: &TrainingPlan) -> Result<Outcome, TrainingError> {
    let (hyper, device, pairs) = (&plan.hyper, &plan.device, &plan.pairs);
    let images;
    let inputs = match plan.architecture {
        Architecture::SiameseGaml => &plan.vectors,
        Architecture::SiameseCnn => {
            handle.progress(0, u64::from(hyper.epochs), "loading face crops")?;
            images = Inputs::images(&training.datasets, &image_ids(pairs), nets::CNN_SIDE)?;
            &images
        }
    };
    let input_dim = descriptor::DIM;
    let mut model = Siamese::new(plan.architecture, plan.loss, input_dim, device, hyper.seed)?;
    let mut optimizer = match hyper.optimizer {
        OptimizerKind::SgdMomentum => Optimizer::sgd(model.vars(), hyper.learning_rate, hyper.momentum),
        OptimizerKind::Adam => Optimizer::adam(model.vars(), hyper.learning_rate)?,
    };
    std::fs::create_dir_all(&plan.dir)?;
    let last_path = plan.dir.join("last.safetensors");
    let mut train_idx = indices_of(&plan.split, TRAIN);
    let validation_idx = indices_of(&plan.split, VALIDATION);
    let test_idx = indices_of(&plan.split, TEST);
    let validation_same = same_of(pairs, &validation_idx);
    tracing::info!(
        parameters = model.parameter_count(),
        train = train_idx.len(),
        validation = validation_idx.len(),
        test = test_idx.len(),
        resumes_after = plan.resumes_after(),
        "training starts"
    );

    let mut history = Vec::new();
    let (mut best_auc, mut best_epoch, mut best_file) = (f64::NEG_INFINITY, 0, String::new());
    let mut first_epoch = 1;
    let mut earlier_seconds = 0.0;
    // The checkpoint a restart would continue from, and when it was written.
    let mut saved: Option<Checkpoint> = None;
    if let Some(c) = &plan.resume {
        let state_path = plan.dir.join(&c.state_file);
        model.reload(&state_path)?;
        optimizer.load_state(&candle_core::safetensors::load(&state_path, device)?)?;
        (best_auc, best_epoch, best_file) = (c.best_auc, c.best_epoch, c.best_file.clone());
        history = c.history.clone();
        earlier_seconds = c.elapsed_seconds;
        // The batch order of each epoch is a shuffle of the previous one: replay them.
        for epoch in 1..=c.epoch {
            train_idx.shuffle(&mut ChaCha8Rng::seed_from_u64(hyper.seed.wrapping_add(u64::from(epoch))));
        }
        first_epoch = c.epoch + 1;
        saved = Some(c.clone());
    } else {
        resume::remove_stale(&plan.dir, &[]);
    }
    let mut saved_at = Instant::now();
    let started = Instant::now();
    let epochs = hyper.epochs;
    for epoch in first_epoch..=epochs {
        let epoch_started = Instant::now();
        train_idx.shuffle(&mut ChaCha8Rng::seed_from_u64(hyper.seed.wrapping_add(u64::from(epoch))));
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        let batches = train_idx.len().div_ceil(hyper.batch_size as usize);
        for (batch, chunk) in train_idx.chunks(hyper.batch_size as usize).enumerate() {
            if handle.is_cancelled() {
                let message = match (&saved, handle.is_stopping()) {
                    (Some(c), true) => format!(
                        "interrupted in epoch {epoch} of {epochs} by a server stop; resumes after epoch {} at the next start",
                        c.epoch
                    ),
                    (None, true) => format!(
                        "interrupted in epoch {epoch} of {epochs} by a server stop; starts again at the next start"
                    ),
                    (_, false) => format!("stopped in epoch {epoch} of {epochs}; no model was stored"),
                };
                return Ok(Outcome::Stopped(message));
            }
            let (xa, xb, y) = batch_tensors(inputs, pairs, chunk, device)?;
            let loss = model.loss(&xa, &xb, &y, &hyper.loss)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(TrainingError::Diverged(format!(
                    "the loss became {value} in epoch {epoch}; try a lower learning rate"
                )));
            }
            optimizer.backward_step(&loss)?;
            loss_sum += per_pair(&model, value, chunk.len()) * chunk.len() as f64;
            seen += chunk.len();
            if batches > 1 {
                let message = format!("epoch {epoch}/{epochs}: batch {}/{batches}", batch + 1);
                handle.progress(u64::from(epoch - 1), u64::from(epochs), message)?;
            }
        }
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        let (validation_distances, validation_loss) = validate(&model, inputs, pairs, &validation_idx, hyper, device)?;
        let validation_auc = metrics::roc_auc(&validation_distances, &validation_same).unwrap_or(0.5);
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            validation_loss,
            validation_auc,
            pairs_per_second: seen as f64 / train_seconds.max(1e-9),
        };
        model.save(&last_path)?;
        if validation_auc > best_auc {
            let previous = std::mem::replace(&mut best_file, resume::best_file(epoch));
            (best_auc, best_epoch) = (validation_auc, epoch);
            let path = plan.dir.join(&best_file);
            model.save(&path)?;
            resume::sync_file(&path)?;
            // The best file the last checkpoint names stays until the next checkpoint.
            if !previous.is_empty() && saved.as_ref().is_none_or(|c| c.best_file != previous) {
                std::fs::remove_file(plan.dir.join(&previous)).ok();
            }
        }
        history.push(record.clone());
        let elapsed = earlier_seconds + started.elapsed().as_secs_f64();
        if epoch == epochs || saved_at.elapsed() >= training.checkpoint_every {
            if let Some(c) =
                checkpoint(plan, &model, &optimizer, epoch, (best_auc, best_epoch, &best_file), &history, elapsed)?
            {
                saved = Some(c);
                saved_at = Instant::now();
            }
        }
        let done_here = f64::from(epoch - first_epoch + 1);
        let eta = started.elapsed().as_secs_f64() / done_here * f64::from(epochs - epoch);
        handle.report(
            u64::from(epoch),
            u64::from(epochs),
            format!(
                "epoch {epoch}/{epochs}: train loss {:.4}, validation loss {:.4}, validation AUC {:.4}",
                record.train_loss, validation_loss, validation_auc
            ),
            &[
                ("epoch", f64::from(epoch)),
                ("epochs", f64::from(epochs)),
                ("train_loss", record.train_loss),
                ("validation_loss", validation_loss),
                ("validation_auc", validation_auc),
                ("pairs_per_second", record.pairs_per_second),
                ("eta_seconds", eta),
            ],
        )?;
    }

    // The kept weights are the epoch with the best validation AUC.
    let best_path = plan.dir.join("best.safetensors");
    std::fs::copy(plan.dir.join(&best_file), &best_path)?;
    resume::sync_file(&best_path)?;
    model.reload(&best_path)?;
    let validation_distances = distances(&model, inputs, pairs, &validation_idx, device)?;
    let threshold = metrics::best_mcc_threshold(&validation_distances, &validation_same);
    let test_distances = distances(&model, inputs, pairs, &test_idx, device)?;
    let test_same = same_of(pairs, &test_idx);
    let scores = scores_of(&plan.model_id, &test_distances, &test_same, threshold);
    let baseline_threshold =
        metrics::best_mcc_threshold(&descriptor_distances(&plan.vectors, pairs, &validation_idx), &validation_same);
    let baseline = scores_of(
        descriptor::MODEL_ID,
        &descriptor_distances(&plan.vectors, pairs, &test_idx),
        &test_same,
        baseline_threshold,
    );

    let evaluation = EvaluationRecord {
        id: training.store.next_id("evaluations")?,
        model_id: plan.model_id.clone(),
        job_id: handle.id(),
        test_pairs: test_idx.len() as u64,
        scores: Some(scores.clone()),
        baseline: Some(baseline.clone()),
        create_millis: now_millis(),
    };
    let model_record = ModelRecord {
        id: plan.model_id.clone(),
        name: plan.name.clone(),
        architecture: plan.architecture as i32,
        loss: plan.loss as i32,
        embedding_dim: nets::EMBEDDING_DIM as u32,
        metric: if model.uses_cosine() { COSINE } else { EUCLIDEAN },
        threshold: threshold as f32,
        training_job_id: handle.id(),
        batch_ids: plan.batch_ids.clone(),
        label_count: pairs.len() as u64,
        scores: Some(scores),
        baseline: Some(baseline),
        create_millis: now_millis(),
        hyperparameters_json: serde_json::to_string(hyper).unwrap_or_default(),
        history,
        pairs: Some(pair_set(pairs, &plan.split)),
        weights_path: best_path.display().to_string(),
        input_dim: if plan.architecture == Architecture::SiameseGaml { input_dim as u32 } else { 0 },
        device: descriptor::device_name(device),
        data_source: plan.data_source.clone(),
        evaluation_id: evaluation.id,
        best_epoch,
        activations: Vec::new(),
    };
    training.store.insert_model(&model_record, &evaluation)?;
    resume::clear(&plan.dir);
    Ok(Outcome::Done(Box::new(model_record)))
}

pub struct EvaluationPlan {
    pub model_id: String,
    model: Option<ModelRecord>,
    pairs: Vec<LabelledPair>,
    vectors: Inputs,
}

pub fn plan_evaluation(training: &Training, model_id: &str, data: DataSource) -> Result<EvaluationPlan, TrainingError> {
    let model = match model_id {
        "" | descriptor::MODEL_ID => None,
        id => Some(training.store.model(id)?.ok_or_else(|| TrainingError::NotFound(format!("no model {id:?}")))?),
    };
    let (pairs, description, _) = gather(training, &data)?;
    let same = pairs.iter().filter(|p| p.same()).count();
    if same == 0 || same == pairs.len() {
        return Err(TrainingError::NotEnoughPairs(format!(
            "{description}: {} pairs, {same} of them similar; an evaluation needs both kinds",
            pairs.len()
        )));
    }
    let vectors = Inputs::vectors(&training.store, &image_ids(&pairs))?;
    let model_id = model.as_ref().map(|m| m.id.clone()).unwrap_or_else(|| descriptor::MODEL_ID.to_string());
    Ok(EvaluationPlan { model_id, model, pairs, vectors })
}

pub fn run_evaluation(training: &Training, handle: JobHandle, plan: EvaluationPlan) {
    let _span = tracing::info_span!("evaluation", job = handle.id(), model = %plan.model_id).entered();
    let ended = match evaluate(training, &handle, &plan) {
        Ok(Some(e)) => {
            let s = e.scores.clone().unwrap_or_default();
            handle.completed(format!(
                "evaluation {} of {} on {} pairs: ROC-AUC {:.4}, MCC {:.4}",
                e.id, plan.model_id, e.test_pairs, s.roc_auc, s.mcc
            ))
        }
        Ok(None) => handle.stopped("stopped before the evaluation was stored"),
        Err(e) => handle.fail(e.to_string()),
    };
    if let Err(e) = ended {
        tracing::error!(error = %e, "cannot record the end of an evaluation job");
    }
}

fn evaluate(
    training: &Training,
    handle: &JobHandle,
    plan: &EvaluationPlan,
) -> Result<Option<EvaluationRecord>, TrainingError> {
    let pairs = &plan.pairs;
    let all: Vec<usize> = (0..pairs.len()).collect();
    let same = same_of(pairs, &all);
    let baseline_distances = descriptor_distances(&plan.vectors, pairs, &all);
    let baseline = scores_of(descriptor::MODEL_ID, &baseline_distances, &same, f64::from(descriptor::THRESHOLD));
    let scores = match &plan.model {
        None => baseline.clone(),
        Some(record) => {
            let device = Device::Cpu;
            let model = siamese::load(record, &device)?;
            let images;
            let inputs = if record.architecture == Architecture::SiameseCnn as i32 {
                images = Inputs::images(&training.datasets, &image_ids(pairs), nets::CNN_SIDE)?;
                &images
            } else {
                &plan.vectors
            };
            let mut scored = Vec::with_capacity(pairs.len());
            for (k, part) in all.chunks(SCORE_BATCH).enumerate() {
                if handle.is_cancelled() {
                    return Ok(None);
                }
                scored.extend(distances(&model, inputs, pairs, part, &device)?);
                handle.progress(
                    ((k + 1) * SCORE_BATCH).min(pairs.len()) as u64,
                    pairs.len() as u64,
                    "scoring pairs",
                )?;
            }
            scores_of(&record.id, &scored, &same, f64::from(record.threshold))
        }
    };
    let evaluation = EvaluationRecord {
        id: training.store.next_id("evaluations")?,
        model_id: plan.model_id.clone(),
        job_id: handle.id(),
        test_pairs: pairs.len() as u64,
        scores: Some(scores),
        baseline: Some(baseline),
        create_millis: now_millis(),
    };
    training.store.insert_evaluation(&evaluation)?;
    Ok(Some(evaluation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::HyperparameterOverrides;

    fn request(overrides: HyperparameterOverrides) -> TrainRequest {
        TrainRequest {
            architecture: Architecture::SiameseCnn,
            loss: None,
            data: DataSource::PairList { dataset: "d".into(), text: String::new() },
            overrides,
            device: String::new(),
            name: String::new(),
            split: Vec::new(),
        }
    }

    #[test]
    fn a_given_setting_is_used_also_when_it_is_zero_and_a_missing_one_takes_the_default() {
        let zeros =
            HyperparameterOverrides { momentum: Some(0.0), margin: Some(0.0), seed: Some(0), ..Default::default() };
        let h = hyperparameters(&request(zeros), LossKind::Contrastive).unwrap();
        assert_eq!((h.momentum, h.loss.margin, h.seed), (0.0, 0.0, 0));
        let defaults = Hyperparameters::defaults(Architecture::SiameseCnn, LossKind::Contrastive);
        assert_eq!((h.epochs, h.learning_rate), (defaults.epochs, defaults.learning_rate));
        let h = hyperparameters(&request(HyperparameterOverrides::default()), LossKind::Contrastive).unwrap();
        assert_eq!((h.momentum, h.loss.margin), (0.9, 2.0), "the method's");
        assert_ne!(h.seed, 0, "a seed is picked when none is given");
        let zero_epochs = HyperparameterOverrides { epochs: Some(0), ..Default::default() };
        let err = hyperparameters(&request(zero_epochs), LossKind::Contrastive).unwrap_err();
        assert!(err.to_string().contains("epochs must be between 1"), "{err}");
    }
}
