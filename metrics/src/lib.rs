//! The evaluation metrics of facesim, in one place for the server (training and evaluation jobs)
//! and the client (`facesim eval lfw`, `facesim eval retrieval`). Plain functions over slices,
//! no dependencies.
//!
//! - [`verification`]: scored pairs (a distance each; smaller means "similar"): ROC, ROC-AUC,
//!   MCC, accuracy, the threshold choices and k-fold accuracy as in the LFW protocol.
//! - [`retrieval`](mod@retrieval): ranked lists: mean average precision and Rank@K.
//! - [`confidence`]: how sure those scores are: bootstrap intervals and paired comparisons.

pub mod confidence;
pub mod retrieval;
pub mod verification;

pub use retrieval::{retrieval, Retrieval};
pub use verification::{
    accuracy, best_accuracy_threshold, best_mcc_threshold, confusion, k_fold_accuracy, mcc, mean_std, roc_auc,
    roc_curve,
};
