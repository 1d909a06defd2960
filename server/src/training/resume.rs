//! What lets a training job outlive a server stop. Beside the model's weights, its folder holds
//! the job's plan (`resume-plan.bin`: settings, the exact pairs and their split) from the start,
//! and a checkpoint (`resume-checkpoint.bin`) naming the state file of the last saved epoch
//! (`state-<epoch>.safetensors`: weights and optimiser state) and the best epoch's weights
//! (`best-<epoch>.safetensors`), with the history so far. Each file is written whole and synced
//! before the checkpoint that names it is renamed into place, so after `kill -9` the checkpoint
//! always names complete files. At the next start the job continues after that epoch; when the
//! job ends (succeeded, failed, cancelled) the files go.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::store::{EpochRecord, PairSetRecord};

pub const PLAN_FILE: &str = "resume-plan.bin";
pub const CHECKPOINT_FILE: &str = "resume-checkpoint.bin";

/// A training job's plan, as it was when the job started.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedPlan {
    #[prost(string, tag = "1")]
    pub model_id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(int32, tag = "3")]
    pub architecture: i32,
    #[prost(int32, tag = "4")]
    pub loss: i32,
    /// The run's `Hyperparameters` as JSON (as kept with the model).
    #[prost(string, tag = "5")]
    pub hyperparameters_json: String,
    #[prost(message, optional, tag = "6")]
    pub pairs: Option<PairSetRecord>,
    /// The labeling batch of each pair (0 for pair lists).
    #[prost(uint64, repeated, tag = "7")]
    pub pair_batch: Vec<u64>,
    #[prost(string, tag = "8")]
    pub device: String,
    #[prost(string, tag = "9")]
    pub data_source: String,
    #[prost(uint64, repeated, tag = "10")]
    pub batch_ids: Vec<u64>,
}

/// How far a training job got: the last saved epoch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Checkpoint {
    #[prost(uint32, tag = "1")]
    pub epoch: u32,
    #[prost(double, tag = "2")]
    pub best_auc: f64,
    #[prost(uint32, tag = "3")]
    pub best_epoch: u32,
    #[prost(message, repeated, tag = "4")]
    pub history: Vec<EpochRecord>,
    /// Training time so far, for the remaining-time estimate.
    #[prost(double, tag = "5")]
    pub elapsed_seconds: f64,
    /// File names inside the model's folder.
    #[prost(string, tag = "6")]
    pub state_file: String,
    #[prost(string, tag = "7")]
    pub best_file: String,
}

pub fn state_file(epoch: u32) -> String {
    format!("state-{epoch}.safetensors")
}

pub fn best_file(epoch: u32) -> String {
    format!("best-{epoch}.safetensors")
}

/// Writes `bytes` to `path` whole or not at all: a synced temporary file renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Syncs a file written by other code (candle's safetensors writer) and its folder entry.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Reads a record file; `None` when there is none.
pub fn read<M: Message + Default>(path: &Path) -> std::io::Result<Option<M>> {
    match std::fs::read(path) {
        Ok(bytes) => M::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The checkpoint files of a folder that `keep` does not name (older states and bests), and
/// temporary files a stop cut short (`*.tmp` of [`write_atomic`], `.tmp*` of the safetensors
/// writer). Only the job's own thread writes in its folder, and not while this runs.
fn stale(dir: &Path, keep: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let ours = (name.starts_with("state-") || name.starts_with("best-")) && name.ends_with(".safetensors");
            let cut_short = name.starts_with(".tmp") || name.ends_with(".tmp");
            (ours || cut_short) && !keep.contains(&name)
        })
        .collect()
}

/// Removes checkpoint files no checkpoint names any more.
pub fn remove_stale(dir: &Path, keep: &[&str]) {
    for path in stale(dir, keep) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an old checkpoint file");
        }
    }
}

/// Removes everything that would resume the job in `dir` (its plan, checkpoint and their files).
pub fn clear(dir: &Path) {
    remove_stale(dir, &[]);
    for name in [CHECKPOINT_FILE, PLAN_FILE] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_stale_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint {
            epoch: 4,
            best_auc: 0.8,
            best_epoch: 3,
            history: vec![EpochRecord { epoch: 1, train_loss: 0.5, ..Default::default() }],
            elapsed_seconds: 1.5,
            state_file: state_file(4),
            best_file: best_file(3),
        };
        let path = dir.path().join(CHECKPOINT_FILE);
        assert_eq!(read::<Checkpoint>(&path).unwrap(), None);
        write_atomic(&path, &checkpoint.encode_to_vec()).unwrap();
        assert_eq!(read::<Checkpoint>(&path).unwrap(), Some(checkpoint.clone()));
        std::fs::write(dir.path().join("bad.bin"), b"\xff\xff\xff").unwrap();
        assert!(read::<Checkpoint>(&dir.path().join("bad.bin")).is_err());

        for name in [
            "state-3.safetensors",
            "state-4.safetensors",
            "best-3.safetensors",
            "best.safetensors",
            ".tmpAb12",
            "x.tmp",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        remove_stale(dir.path(), &[&checkpoint.state_file, &checkpoint.best_file]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["bad.bin", "best-3.safetensors", "best.safetensors", CHECKPOINT_FILE, "state-4.safetensors"]);
        clear(dir.path());
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!left.iter().any(|n| n.starts_with("state-") || n == CHECKPOINT_FILE), "{left:?}");
        assert!(left.contains(&"best.safetensors".to_string()), "the kept model's weights stay: {left:?}");
    }
}
