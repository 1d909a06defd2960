//! The records kept in sled, encoded as protobuf messages so that fields can be added later
//! without a migration. They are storage types, not API types: the API converts them.

/// A user account.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    /// The role's number, as in `auth::Role`.
    #[prost(int32, tag = "3")]
    pub role: i32,
    #[prost(bool, tag = "4")]
    pub disabled: bool,
    #[prost(int64, tag = "5")]
    pub create_millis: i64,
}

/// A bearer token. Only its SHA-256 hash is kept; the token itself is shown once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TokenRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub user_id: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub sha256: Vec<u8>,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(int64, tag = "5")]
    pub create_millis: i64,
    /// 0 when the token never expires.
    #[prost(int64, tag = "6")]
    pub expire_millis: i64,
    #[prost(bool, tag = "7")]
    pub revoked: bool,
    /// The token's first characters, to recognise it in listings.
    #[prost(string, tag = "8")]
    pub prefix: String,
}

/// An imported image's metadata. Its bytes live in the `image_originals` and `image_faces` trees.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub dataset: String,
    #[prost(uint64, tag = "3")]
    pub identity_id: u64,
    #[prost(string, tag = "4")]
    pub file_name: String,
    #[prost(bytes = "vec", tag = "5")]
    pub sha256: Vec<u8>,
    /// The format's number, as in `dataset::Format`.
    #[prost(int32, tag = "6")]
    pub format: i32,
    #[prost(uint32, tag = "7")]
    pub width: u32,
    #[prost(uint32, tag = "8")]
    pub height: u32,
    #[prost(uint64, tag = "9")]
    pub byte_size: u64,
    #[prost(int64, tag = "10")]
    pub create_millis: i64,
    /// The detected face its crop was cut from; `None` in center mode.
    #[prost(message, optional, tag = "11")]
    pub face: Option<FaceRecord>,
}

/// A face found in an imported image, in the original's pixels.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FaceRecord {
    /// How many faces the image held.
    #[prost(uint32, tag = "1")]
    pub count: u32,
    #[prost(float, tag = "2")]
    pub score: f32,
    /// x, y, width, height.
    #[prost(float, repeated, tag = "3")]
    pub bbox: Vec<f32>,
    /// x0, y0, x1, y1, … of the 68 landmarks.
    #[prost(float, repeated, tag = "4")]
    pub landmarks: Vec<f32>,
}

/// A person in a dataset.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IdentityRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub dataset: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(uint64, tag = "4")]
    pub image_count: u64,
}

/// A background job and its progress.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JobRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The kind's number, as in the API's `JobKind`.
    #[prost(int32, tag = "2")]
    pub kind: i32,
    /// The state's number, as in the API's `JobState`.
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(uint64, tag = "4")]
    pub done: u64,
    #[prost(uint64, tag = "5")]
    pub total: u64,
    #[prost(string, tag = "6")]
    pub message: String,
    #[prost(uint64, tag = "7")]
    pub created_by: u64,
    #[prost(int64, tag = "8")]
    pub create_millis: i64,
    #[prost(int64, tag = "9")]
    pub start_millis: i64,
    #[prost(int64, tag = "10")]
    pub end_millis: i64,
    #[prost(string, tag = "11")]
    pub device: String,
    #[prost(string, tag = "12")]
    pub model_id: String,
    #[prost(map = "string, double", tag = "13")]
    pub metrics: std::collections::HashMap<String, f64>,
    /// Batches a proposal job created.
    #[prost(uint64, repeated, tag = "14")]
    pub batch_ids: Vec<u64>,
}

/// A proposed pair of images (`image_a < image_b`) and where labeling stands.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PairRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub image_a: u64,
    #[prost(uint64, tag = "3")]
    pub image_b: u64,
    #[prost(uint64, tag = "4")]
    pub identity_a: u64,
    #[prost(uint64, tag = "5")]
    pub identity_b: u64,
    /// Euclidean distance under `model_id` when the pair was proposed.
    #[prost(float, tag = "6")]
    pub distance: f32,
    #[prost(string, tag = "7")]
    pub model_id: String,
    #[prost(uint64, tag = "8")]
    pub batch_id: u64,
    /// The state's number, as in the API's `PairState`.
    #[prost(int32, tag = "9")]
    pub state: i32,
    #[prost(uint32, tag = "10")]
    pub votes: u32,
    #[prost(int64, tag = "11")]
    pub create_millis: i64,
    #[prost(uint64, tag = "12")]
    pub proposal_job_id: u64,
    /// For gold pairs: the known answer's `VoteChoice` number; 0 for proposed pairs.
    #[prost(int32, tag = "13")]
    pub gold_answer: i32,
}

/// A labeling batch: consecutive pairs of one proposal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The state's number, as in the API's `BatchState`.
    #[prost(int32, tag = "2")]
    pub state: i32,
    #[prost(uint32, tag = "3")]
    pub pair_count: u32,
    #[prost(uint64, tag = "4")]
    pub proposal_job_id: u64,
    #[prost(string, tag = "5")]
    pub model_id: String,
    #[prost(string, tag = "6")]
    pub note: String,
    #[prost(int64, tag = "7")]
    pub create_millis: i64,
    /// The seed the proposal's pairs were shuffled with (None: ranked order).
    #[prost(uint64, optional, tag = "8")]
    pub shuffle_seed: Option<u64>,
}

/// One annotator's vote on a pair (or answer to a gold pair).
#[derive(Clone, PartialEq, prost::Message)]
pub struct VoteRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub pair_id: u64,
    #[prost(uint64, tag = "3")]
    pub annotator_id: u64,
    /// The choice's number, as in the API's `VoteChoice`.
    #[prost(int32, tag = "4")]
    pub choice: i32,
    #[prost(uint64, tag = "5")]
    pub lease_id: u64,
    #[prost(int64, tag = "6")]
    pub lease_millis: i64,
    #[prost(int64, tag = "7")]
    pub vote_millis: i64,
    /// False once the annotator was disabled, and for gold answers.
    #[prost(bool, tag = "8")]
    pub counted: bool,
    #[prost(bool, tag = "9")]
    pub gold: bool,
}

/// The final label of a pair: the majority of its three counted votes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelRecord {
    #[prost(uint64, tag = "1")]
    pub pair_id: u64,
    #[prost(uint64, tag = "2")]
    pub batch_id: u64,
    /// The choice's number, as in the API's `VoteChoice`.
    #[prost(int32, tag = "3")]
    pub majority: i32,
    #[prost(uint32, tag = "4")]
    pub similar_votes: u32,
    #[prost(uint32, tag = "5")]
    pub dissimilar_votes: u32,
    #[prost(int64, tag = "6")]
    pub label_millis: i64,
}

/// Labeling facts about an annotator beyond its votes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnnotatorRecord {
    #[prost(uint64, tag = "1")]
    pub user_id: u64,
    #[prost(bool, tag = "2")]
    pub disabled: bool,
    #[prost(uint64, tag = "3")]
    pub rejected_too_fast: u64,
    #[prost(uint64, tag = "4")]
    pub skips: u64,
}

/// A pair of images shown in the instructions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExampleRecord {
    #[prost(uint64, tag = "1")]
    pub image_a: u64,
    #[prost(uint64, tag = "2")]
    pub image_b: u64,
    #[prost(string, tag = "3")]
    pub explanation: String,
}

/// The annotators' instructions, set by a researcher.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstructionsRecord {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(message, repeated, tag = "2")]
    pub similar: Vec<ExampleRecord>,
    #[prost(message, repeated, tag = "3")]
    pub dissimilar: Vec<ExampleRecord>,
}

/// How one model scored on one pair set (see the API's `ModelScores`). Scores are distances:
/// smaller means "similar".
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScoresRecord {
    #[prost(string, tag = "1")]
    pub model_id: String,
    #[prost(double, tag = "2")]
    pub roc_auc: f64,
    #[prost(double, tag = "3")]
    pub mcc: f64,
    #[prost(double, tag = "4")]
    pub threshold: f64,
    #[prost(double, tag = "5")]
    pub accuracy: f64,
    /// ROC points, interleaved: false positive rate, true positive rate, threshold.
    #[prost(float, repeated, tag = "6")]
    pub roc: Vec<f32>,
    /// The scored pairs by class.
    #[prost(uint64, tag = "7")]
    pub similar_pairs: u64,
    #[prost(uint64, tag = "8")]
    pub dissimilar_pairs: u64,
    /// 95% intervals (stratified bootstrap) of ROC-AUC and MCC; all zero in records written
    /// before they were computed.
    #[prost(double, tag = "9")]
    pub auc_low: f64,
    #[prost(double, tag = "10")]
    pub auc_high: f64,
    #[prost(double, tag = "11")]
    pub mcc_low: f64,
    #[prost(double, tag = "12")]
    pub mcc_high: f64,
}

/// One epoch of a training run.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EpochRecord {
    #[prost(uint32, tag = "1")]
    pub epoch: u32,
    #[prost(double, tag = "2")]
    pub train_loss: f64,
    #[prost(double, tag = "3")]
    pub validation_loss: f64,
    #[prost(double, tag = "4")]
    pub validation_auc: f64,
    #[prost(double, tag = "5")]
    pub pairs_per_second: f64,
}

/// The exact pairs a model was trained and evaluated on, as parallel lists: the images, the
/// target (1 similar, 0 dissimilar, in between for soft labels), the split (0 train,
/// 1 validation, 2 test) and the labelled pair's id (0 for pairs from a pair list).
/// The split numbers of [`PairSetRecord::split`].
pub const SPLIT_TRAIN: u32 = 0;
pub const SPLIT_VALIDATION: u32 = 1;
pub const SPLIT_TEST: u32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PairSetRecord {
    #[prost(uint64, repeated, tag = "1")]
    pub image_a: Vec<u64>,
    #[prost(uint64, repeated, tag = "2")]
    pub image_b: Vec<u64>,
    #[prost(float, repeated, tag = "3")]
    pub target: Vec<f32>,
    #[prost(uint32, repeated, tag = "4")]
    pub split: Vec<u32>,
    #[prost(uint64, repeated, tag = "5")]
    pub pair_id: Vec<u64>,
}

/// A trained model in the registry. Its weights are the safetensors file `weights_path`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    /// The architecture's number, as in the API's `Architecture`.
    #[prost(int32, tag = "3")]
    pub architecture: i32,
    /// The loss's number, as in the API's `LossFunction`.
    #[prost(int32, tag = "4")]
    pub loss: i32,
    #[prost(uint32, tag = "5")]
    pub embedding_dim: u32,
    /// The metric's number, as in the API's `DistanceMetric`.
    #[prost(int32, tag = "6")]
    pub metric: i32,
    /// Distance at or below which the model calls a pair similar (chosen on validation).
    #[prost(float, tag = "7")]
    pub threshold: f32,
    #[prost(uint64, tag = "8")]
    pub training_job_id: u64,
    #[prost(uint64, repeated, tag = "9")]
    pub batch_ids: Vec<u64>,
    #[prost(uint64, tag = "10")]
    pub label_count: u64,
    /// On the test split.
    #[prost(message, optional, tag = "11")]
    pub scores: Option<ScoresRecord>,
    /// The pretrained descriptor on the same test pairs.
    #[prost(message, optional, tag = "12")]
    pub baseline: Option<ScoresRecord>,
    #[prost(int64, tag = "13")]
    pub create_millis: i64,
    /// The hyper-parameters used, defaults filled in, as JSON.
    #[prost(string, tag = "14")]
    pub hyperparameters_json: String,
    #[prost(message, repeated, tag = "15")]
    pub history: Vec<EpochRecord>,
    #[prost(message, optional, tag = "16")]
    pub pairs: Option<PairSetRecord>,
    #[prost(string, tag = "17")]
    pub weights_path: String,
    /// Length of the input features (GAML: the descriptor's dimension; CNN: 0).
    #[prost(uint32, tag = "18")]
    pub input_dim: u32,
    #[prost(string, tag = "19")]
    pub device: String,
    /// Where the pairs came from, for people ("labels of batches 1, 2 (3-0 only)", "pair list …").
    #[prost(string, tag = "20")]
    pub data_source: String,
    #[prost(uint64, tag = "21")]
    pub evaluation_id: u64,
    /// The epoch whose weights were kept (best validation AUC).
    #[prost(uint32, tag = "22")]
    pub best_epoch: u32,
    /// Activations of the model and refused ones, oldest first.
    #[prost(message, repeated, tag = "23")]
    pub activations: Vec<ActivationRecord>,
}

/// One activation of a model, or one the guard refused, with the comparison it rested on.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ActivationRecord {
    #[prost(int64, tag = "1")]
    pub millis: i64,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(bool, tag = "3")]
    pub forced: bool,
    #[prost(bool, tag = "4")]
    pub refused: bool,
    #[prost(message, optional, tag = "5")]
    pub comparison: Option<ComparisonRecord>,
}

/// Two models' ROC-AUC on the same labelled pairs (see `models::compare`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ComparisonRecord {
    #[prost(string, tag = "1")]
    pub candidate: String,
    #[prost(string, tag = "2")]
    pub reference: String,
    #[prost(uint64, tag = "3")]
    pub similar_pairs: u64,
    #[prost(uint64, tag = "4")]
    pub dissimilar_pairs: u64,
    #[prost(double, tag = "5")]
    pub candidate_auc: f64,
    #[prost(double, tag = "6")]
    pub reference_auc: f64,
    #[prost(double, tag = "7")]
    pub difference: f64,
    #[prost(double, tag = "8")]
    pub difference_low: f64,
    #[prost(double, tag = "9")]
    pub difference_high: f64,
    /// The API's `ComparisonVerdict` number.
    #[prost(int32, tag = "10")]
    pub verdict: i32,
    #[prost(string, tag = "11")]
    pub summary: String,
}

/// An evaluation of a model on a pair set, next to the pretrained descriptor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EvaluationRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub model_id: String,
    #[prost(uint64, tag = "3")]
    pub job_id: u64,
    #[prost(uint64, tag = "4")]
    pub test_pairs: u64,
    #[prost(message, optional, tag = "5")]
    pub scores: Option<ScoresRecord>,
    #[prost(message, optional, tag = "6")]
    pub baseline: Option<ScoresRecord>,
    #[prost(int64, tag = "7")]
    pub create_millis: i64,
}
