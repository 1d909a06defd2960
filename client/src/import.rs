//! Streaming a folder of faces laid out as `<identity>/<file>` into the server.

use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::{pb, Client, ClientError};

/// One file to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportEntry {
    pub identity: String,
    pub file_name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Lists the files of `dir` in the `<identity>/<file>` layout, sorted by identity then file.
/// Hidden files and folders and files at the top level (such as a README) are skipped.
pub fn scan_import_dir(dir: &Path) -> Result<Vec<ImportEntry>, ClientError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ClientError::Io { path, source }
    };
    let hidden = |name: &str| name.starts_with('.');
    let mut entries = Vec::new();
    let mut identities: Vec<_> = std::fs::read_dir(dir).map_err(io(dir))?.collect::<Result<_, _>>().map_err(io(dir))?;
    identities.sort_by_key(|e| e.file_name());
    for identity in identities {
        let identity_name = identity.file_name().to_string_lossy().into_owned();
        if hidden(&identity_name) || !identity.path().is_dir() {
            continue;
        }
        let path = identity.path();
        let mut files: Vec<_> =
            std::fs::read_dir(&path).map_err(io(&path))?.collect::<Result<_, _>>().map_err(io(&path))?;
        files.sort_by_key(|e| e.file_name());
        for file in files {
            let file_name = file.file_name().to_string_lossy().into_owned();
            let meta = file.metadata().map_err(io(&file.path()))?;
            if hidden(&file_name) || !meta.is_file() {
                continue;
            }
            entries.push(ImportEntry {
                identity: identity_name.clone(),
                file_name,
                path: file.path(),
                size: meta.len(),
            });
        }
    }
    Ok(entries)
}

/// Called as files are sent: `(files sent, bytes sent)`.
pub trait ImportProgress: Send + Sync + 'static {
    fn sent(&self, files: u64, bytes: u64);
}

impl<F: Fn(u64, u64) + Send + Sync + 'static> ImportProgress for F {
    fn sent(&self, files: u64, bytes: u64) {
        self(files, bytes)
    }
}

/// How the server cuts faces from the files sent: `pb::FaceMode` as a number (0 = the server's
/// default), the least detector score (0 = the server's default), and, for imports, whether
/// every face of a file is stored as its own image (`file#k`) rather than the largest only.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaceChoice {
    pub mode: i32,
    pub min_score: f32,
    pub all_faces: bool,
}

impl Client {
    /// Streams `entries` into `dataset` in one ImportImages call and returns the server's report.
    /// A file that cannot be read here is reported as rejected without being sent.
    pub async fn import_files(
        &self,
        dataset: &str,
        entries: Vec<ImportEntry>,
        progress: impl ImportProgress,
    ) -> Result<pb::ImportImagesResponse, ClientError> {
        self.import_files_with(dataset, entries, FaceChoice::default(), progress).await
    }

    /// [`Client::import_files`] with the face mode and threshold of every file.
    pub async fn import_files_with(
        &self,
        dataset: &str,
        entries: Vec<ImportEntry>,
        face: FaceChoice,
        progress: impl ImportProgress,
    ) -> Result<pb::ImportImagesResponse, ClientError> {
        let dataset = dataset.to_string();
        let unreadable = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let progress = std::sync::Arc::new(progress);
        let (unreadable_in, progress_in) = (unreadable.clone(), progress.clone());
        let counters =
            std::sync::Arc::new((std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)));
        let stream = futures::stream::iter(entries.into_iter().enumerate())
            .then(move |(index, entry)| {
                let dataset = dataset.clone();
                async move { (index, tokio::fs::read(&entry.path).await, entry, dataset) }
            })
            .filter_map(move |(index, data, entry, dataset)| {
                let (unreadable, progress, counters) = (unreadable_in.clone(), progress_in.clone(), counters.clone());
                async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    let files = counters.0.fetch_add(1, Relaxed) + 1;
                    match data {
                        Ok(data) => {
                            let bytes = counters.1.fetch_add(data.len() as u64, Relaxed) + data.len() as u64;
                            progress.sent(files, bytes);
                            Some(pb::ImportImagesRequest {
                                dataset,
                                identity: entry.identity,
                                file_name: entry.file_name,
                                data,
                                face_mode: face.mode,
                                min_face_score: face.min_score,
                                all_faces: face.all_faces,
                            })
                        }
                        Err(e) => {
                            progress.sent(files, counters.1.load(Relaxed));
                            unreadable.lock().expect("not poisoned").push((index, entry, e.to_string()));
                            None
                        }
                    }
                }
            });
        let mut report = self.datasets().import_images(stream).await?.into_inner();
        for (_, entry, message) in unreadable.lock().expect("not poisoned").drain(..) {
            report.rejected += 1;
            report.results.push(pb::ImportResult {
                file_name: entry.file_name,
                identity: entry.identity,
                outcome: pb::ImportOutcome::Rejected as i32,
                message: format!("not sent: cannot read {}: {message}", entry.path.display()),
                ..Default::default()
            });
        }
        Ok(report)
    }
}
