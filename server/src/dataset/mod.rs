//! Face datasets: validating, decoding and normalising imported images, and reading them back.
//! Every file gets its own outcome; a bad file never stops the others.

mod decode;
mod face;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use decode::{
    decode_face_png, decode_limited, encode_jpeg, encode_png, face_crop, thumbnail_jpeg, DecodeError, DecodeLimits,
    Format, FACE_SIZE,
};
pub use face::{FaceCrop, FaceCropError, FaceDefaults, FaceMode, FacePipeline, FaceRequest, FoundFace};

use crate::store::{
    DeletedImage, FaceRecord, IdentityRecord, ImageRecord, InsertImage, InsertedImage, Store, StoreError,
};

/// Errors of dataset operations (per-file problems are [`Rejection`]s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("no image with id {0}")]
    ImageNotFound(u64),
    #[error("no identity with id {0}")]
    IdentityNotFound(u64),
    #[error("invalid dataset name {0:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'")]
    InvalidDatasetName(String),
    #[error("thumbnail size {0} is out of range 16-512")]
    InvalidThumbnailSize(u32),
    #[error("stored face crop of image {id} cannot be read: {source}")]
    BadStoredFace { id: u64, source: DecodeError },
    #[error("give 1 to {max} image ids, got {got}")]
    TraitsCount { got: usize, max: usize },
    #[error("the uploaded image cannot be used: {0}")]
    BadUpload(DecodeError),
    #[error(transparent)]
    Face(#[from] FaceCropError),
    #[error("cannot read demo faces from {path}: {source}")]
    DemoDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most image ids one traits request may name.
pub const MAX_TRAITS_IDS: usize = 1000;

/// Why one file was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Empty,
    TooLarge,
    UnsupportedFormat,
    Corrupt,
    DimensionsTooLarge,
    TooSmall,
    InvalidName,
    /// Detect mode found no face above the threshold.
    NoFace,
}

/// One file's result.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportOutcome {
    Imported { image_id: u64, identity_id: u64 },
    Duplicate { image_id: u64 },
    Rejected { reason: RejectReason, message: String },
}

/// A file to import.
#[derive(Debug, Clone)]
pub struct ImportFile {
    pub dataset: String,
    pub identity: String,
    pub file_name: String,
    pub data: Vec<u8>,
    /// How the face is cut (defaults: the server's).
    pub face: FaceRequest,
    /// Store every detected face as its own image (`file_name#k`, k = 1 for the largest)
    /// instead of the largest only.
    pub all_faces: bool,
}

/// A decoded, cropped and hashed face of a file, ready to be stored.
#[derive(Debug)]
pub struct Prepared(InsertImage);

impl Prepared {
    /// The name it is stored under (`file#k` for the faces of an all-faces import).
    pub fn file_name(&self) -> &str {
        &self.0.file_name
    }
}

/// Importing and reading images.
#[derive(Clone)]
pub struct Datasets {
    store: Store,
    limits: DecodeLimits,
    faces: FacePipeline,
}

/// A dataset's name and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSummary {
    pub name: String,
    pub identity_count: u64,
    pub image_count: u64,
}

/// What is kept of a detected face.
fn face_record(found: &FoundFace) -> FaceRecord {
    let b = &found.face.bbox;
    FaceRecord {
        count: found.count as u32,
        score: found.face.score,
        bbox: vec![b.x as f32, b.y as f32, b.width as f32, b.height as f32],
        landmarks: found.face.landmarks.iter().flat_map(|p| [p.x as f32, p.y as f32]).collect(),
    }
}

/// Checks a dataset name: 1-64 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn valid_dataset_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks an identity name: 1-200 characters, no control characters, no path separators, not
/// `.` or `..`, no surrounding white space.
pub fn identity_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.chars().count() > 200 {
        Some("is longer than 200 characters")
    } else if name == "." || name == ".." {
        Some("is a path component")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else if name.trim() != name {
        Some("has leading or trailing white space")
    } else {
        None
    }
}

fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > 255 {
        Some("is longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    }
}

impl Datasets {
    pub fn new(store: Store, limits: DecodeLimits, faces: FacePipeline) -> Self {
        Datasets { store, limits, faces }
    }

    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// The server's face mode and threshold, used where a request leaves them unset.
    pub fn face_defaults(&self) -> FaceDefaults {
        self.faces.defaults()
    }

    fn decode_upload(&self, bytes: &[u8]) -> Result<decode::Decoded, DatasetError> {
        decode_limited(bytes, &self.limits).map_err(DatasetError::BadUpload)
    }

    /// Every face of uploaded image bytes, largest first, with the image's size.
    pub fn detect_upload(
        &self,
        bytes: &[u8],
        request: FaceRequest,
    ) -> Result<(crate::faces::Found, u32, u32), DatasetError> {
        let decoded = self.decode_upload(bytes)?;
        let found = self.faces.detect(&decoded.image.to_rgb8(), request.min_score)?;
        Ok((found, decoded.width, decoded.height))
    }

    /// The face crop of uploaded image bytes (not stored), as a ranking RPC sees it.
    pub fn upload_face(&self, bytes: &[u8], request: FaceRequest) -> Result<FaceCrop, DatasetError> {
        let decoded = self.decode_upload(bytes)?;
        Ok(self.faces.crop(&decoded.image, request)?)
    }

    /// Validates, decodes, crops and stores one file: the outcome of each face stored (one
    /// unless `all_faces`), or the file's rejection. CPU-heavy: call from a blocking thread.
    pub fn import(&self, file: ImportFile) -> Result<Vec<ImportOutcome>, DatasetError> {
        match self.prepare(file) {
            Ok(prepared) => prepared.into_iter().map(|p| self.store(p)).collect(),
            Err(rejected) => Ok(vec![rejected]),
        }
    }

    /// The CPU-heavy half of an import: validates names, decodes under the limits, crops and
    /// hashes, one [`Prepared`] per face kept (never none). Many files may be prepared at once;
    /// [`Datasets::store`] then keeps their order.
    pub fn prepare(&self, file: ImportFile) -> Result<Vec<Prepared>, ImportOutcome> {
        let reject = |reason, message: String| Err(ImportOutcome::Rejected { reason, message });
        if !valid_dataset_name(&file.dataset) {
            return reject(
                RejectReason::InvalidName,
                format!("dataset name {:?} is invalid: use 1-64 letters, digits, '.', '_' or '-'", file.dataset),
            );
        }
        if let Some(problem) = identity_name_problem(&file.identity) {
            return reject(RejectReason::InvalidName, format!("identity name {:?} {problem}", file.identity));
        }
        if let Some(problem) = file_name_problem(&file.file_name) {
            return reject(RejectReason::InvalidName, format!("file name {:?} {problem}", file.file_name));
        }
        let decoded = match decode_limited(&file.data, &self.limits) {
            Ok(decoded) => decoded,
            Err(e) => return reject(e.reason(), e.to_string()),
        };
        let crops = match self.faces.crops(&decoded.image, file.face, file.all_faces) {
            Ok(crops) => crops,
            Err(e @ (FaceCropError::NoFace { .. } | FaceCropError::BadMinScore(_))) => {
                return reject(RejectReason::NoFace, e.to_string())
            }
            Err(e @ FaceCropError::Faces(_)) => return reject(RejectReason::Corrupt, e.to_string()),
        };
        Ok(crops
            .into_iter()
            .enumerate()
            .map(|(k, cropped)| {
                // The k-th face of an all-faces import is its own image: its name and hash say
                // which face it is, so that importing the file again finds each one stored.
                let (file_name, sha256): (String, [u8; 32]) = if file.all_faces {
                    let suffix = format!("#{}", k + 1);
                    let hash = Sha256::new().chain_update(&file.data).chain_update(suffix.as_bytes()).finalize();
                    (format!("{}{suffix}", file.file_name), hash.into())
                } else {
                    (file.file_name.clone(), Sha256::digest(&file.data).into())
                };
                Prepared(InsertImage {
                    dataset: file.dataset.clone(),
                    identity: file.identity.clone(),
                    file_name,
                    sha256,
                    format: decoded.format as i32,
                    width: decoded.width,
                    height: decoded.height,
                    original: file.data.clone(),
                    face_png: encode_png(&cropped.crop),
                    face: cropped.found.map(|found| face_record(&found)),
                })
            })
            .collect())
    }

    /// Stores a prepared image (ids are handed out in the order of these calls).
    pub fn store(&self, prepared: Prepared) -> Result<ImportOutcome, DatasetError> {
        Ok(match self.store.insert_image(&prepared.0)? {
            InsertedImage::New { image_id, identity_id } => ImportOutcome::Imported { image_id, identity_id },
            InsertedImage::Duplicate { image_id } => ImportOutcome::Duplicate { image_id },
        })
    }

    /// Makes every import so far durable.
    pub async fn flush(&self) -> Result<(), DatasetError> {
        Ok(self.store.flush().await?)
    }

    pub fn is_empty(&self) -> bool {
        !self.store.has_images()
    }

    pub fn image(&self, id: u64) -> Result<ImageRecord, DatasetError> {
        self.store.image(id)?.ok_or(DatasetError::ImageNotFound(id))
    }

    pub fn identity(&self, id: u64) -> Result<IdentityRecord, DatasetError> {
        self.store.identity(id)?.ok_or(DatasetError::IdentityNotFound(id))
    }

    pub fn original(&self, id: u64) -> Result<Vec<u8>, DatasetError> {
        self.store.image_original(id)?.ok_or(DatasetError::ImageNotFound(id))
    }

    /// The normalised face crop as PNG.
    pub fn face_png(&self, id: u64) -> Result<Vec<u8>, DatasetError> {
        self.store.image_face(id)?.ok_or(DatasetError::ImageNotFound(id))
    }

    /// The normalised face crop, decoded: what every model sees.
    pub fn face(&self, id: u64) -> Result<image::RgbImage, DatasetError> {
        decode_face_png(&self.face_png(id)?).map_err(|source| DatasetError::BadStoredFace { id, source })
    }

    /// Apparent age and gender of stored faces (from their crops), in the order asked; at most
    /// [`MAX_TRAITS_IDS`] ids. CPU-heavy: call from a blocking thread.
    pub fn traits(&self, ids: &[u64]) -> Result<Vec<crate::faces::Traits>, DatasetError> {
        if ids.is_empty() || ids.len() > MAX_TRAITS_IDS {
            return Err(DatasetError::TraitsCount { got: ids.len(), max: MAX_TRAITS_IDS });
        }
        ids.iter().map(|&id| Ok(self.faces.traits(&self.face(id)?)?)).collect()
    }

    /// A JPEG of the face crop whose longest side is `size` pixels.
    pub fn thumbnail(&self, id: u64, size: u32) -> Result<Vec<u8>, DatasetError> {
        if !(16..=512).contains(&size) {
            return Err(DatasetError::InvalidThumbnailSize(size));
        }
        Ok(thumbnail_jpeg(&self.face(id)?, size))
    }

    /// Images in id order starting at `start_id`, filtered, at most `limit`. Returns the page and
    /// the id to start the next page at, if any.
    pub fn images_page(
        &self,
        dataset: Option<&str>,
        identity_id: Option<u64>,
        start_id: u64,
        limit: usize,
    ) -> Result<(Vec<ImageRecord>, Option<u64>), DatasetError> {
        if let Some(name) = dataset {
            if !valid_dataset_name(name) {
                return Err(DatasetError::InvalidDatasetName(name.to_string()));
            }
        }
        let mut page = Vec::with_capacity(limit.min(1024));
        if let Some(identity_id) = identity_id {
            self.identity(identity_id)?;
            for image_id in self.store.image_ids_of_identity_from(identity_id, start_id) {
                let image_id = image_id?;
                if page.len() == limit {
                    return Ok((page, Some(image_id)));
                }
                let image = self.image(image_id)?;
                if dataset.is_none_or(|d| d == image.dataset) {
                    page.push(image);
                }
            }
            return Ok((page, None));
        }
        for image in self.store.images_from(start_id) {
            let image = image?;
            if dataset.is_some_and(|d| d != image.dataset) {
                continue;
            }
            if page.len() == limit {
                return Ok((page, Some(image.id)));
            }
            page.push(image);
        }
        Ok((page, None))
    }

    /// Identities in id order starting at `start_id`, optionally of one dataset.
    pub fn identities_page(
        &self,
        dataset: Option<&str>,
        start_id: u64,
        limit: usize,
    ) -> Result<(Vec<IdentityRecord>, Option<u64>), DatasetError> {
        let mut page = Vec::new();
        for identity in self.store.identities_from(start_id) {
            let identity = identity?;
            if dataset.is_some_and(|d| d != identity.dataset) || identity.image_count == 0 {
                continue;
            }
            if page.len() == limit {
                return Ok((page, Some(identity.id)));
            }
            page.push(identity);
        }
        Ok((page, None))
    }

    /// Every dataset with its counts, by name.
    pub fn datasets(&self) -> Result<Vec<DatasetSummary>, DatasetError> {
        let mut by_name = std::collections::BTreeMap::<String, DatasetSummary>::new();
        for identity in self.store.identities_from(0) {
            let identity = identity?;
            if identity.image_count == 0 {
                continue;
            }
            let entry = by_name.entry(identity.dataset.clone()).or_insert_with(|| DatasetSummary {
                name: identity.dataset.clone(),
                identity_count: 0,
                image_count: 0,
            });
            entry.identity_count += 1;
            entry.image_count += identity.image_count;
        }
        Ok(by_name.into_values().collect())
    }

    pub fn delete(&self, id: u64) -> Result<DeletedImage, DatasetError> {
        self.store.delete_image(id)?.ok_or(DatasetError::ImageNotFound(id))
    }

    /// Imports a folder laid out as `<identity>/<file>` into `dataset`, in name order. Used for
    /// the bundled demo faces; the CLI streams the same layout over gRPC.
    pub fn import_dir(
        &self,
        dir: &Path,
        dataset: &str,
        face: FaceRequest,
    ) -> Result<Vec<(String, ImportOutcome)>, DatasetError> {
        let io = |source| DatasetError::DemoDir { path: dir.display().to_string(), source };
        let mut identities: Vec<_> = std::fs::read_dir(dir).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
        identities.retain(|e| e.path().is_dir());
        identities.sort_by_key(|e| e.file_name());
        let mut outcomes = Vec::new();
        for identity in identities {
            let mut files: Vec<_> =
                std::fs::read_dir(identity.path()).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
            files.retain(|e| e.path().is_file());
            files.sort_by_key(|e| e.file_name());
            for file in files {
                let file_name = file.file_name().to_string_lossy().into_owned();
                let data = std::fs::read(file.path()).map_err(io)?;
                let mut outcome = self.import(ImportFile {
                    dataset: dataset.to_string(),
                    identity: identity.file_name().to_string_lossy().into_owned(),
                    file_name: file_name.clone(),
                    data,
                    face,
                    all_faces: false,
                })?;
                outcomes.push((file_name, outcome.swap_remove(0)));
            }
        }
        self.store.flush_blocking()?;
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        encode_png(&img)
    }

    fn datasets() -> (tempfile::TempDir, Datasets) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let faces = FacePipeline::load(FaceDefaults::default()).unwrap();
        (dir, Datasets::new(store, DecodeLimits::default(), faces))
    }

    fn file(identity: &str, data: Vec<u8>) -> ImportFile {
        // Synthetic pictures hold no face: they are cut in center mode.
        let face = FaceRequest { mode: Some(FaceMode::Center), min_score: None };
        ImportFile {
            dataset: "demo".into(),
            identity: identity.into(),
            file_name: "f.png".into(),
            data,
            face,
            all_faces: false,
        }
    }

    #[test]
    fn imports_dedupes_and_counts_identities() {
        let (_dir, ds) = datasets();
        let a = ds.import(file("Ada", png_bytes(60, 40))).unwrap().remove(0);
        let ImportOutcome::Imported { image_id, identity_id } = a else { panic!("{a:?}") };
        assert_eq!(ds.import(file("Bob", png_bytes(60, 40))).unwrap().remove(0), ImportOutcome::Duplicate { image_id });
        ds.import(file("Ada", png_bytes(61, 40))).unwrap().remove(0);
        assert_eq!(ds.identity(identity_id).unwrap().image_count, 2);
        let face = image::load_from_memory(&ds.face_png(image_id).unwrap()).unwrap();
        assert_eq!((face.width(), face.height()), (FACE_SIZE, FACE_SIZE));
        let summary = ds.datasets().unwrap();
        assert_eq!(summary, vec![DatasetSummary { name: "demo".into(), identity_count: 1, image_count: 2 }]);
    }

    #[test]
    fn rejects_bad_names_without_storing() {
        let (_dir, ds) = datasets();
        for identity in ["", "..", "a/b", "a\\b", " x", "tab\there"] {
            let out = ds.import(file(identity, png_bytes(40, 40))).unwrap().remove(0);
            assert!(matches!(out, ImportOutcome::Rejected { reason: RejectReason::InvalidName, .. }), "{identity:?}");
        }
        assert!(ds.is_empty());
    }

    #[test]
    fn paging_by_identity_and_delete() {
        let (_dir, ds) = datasets();
        let mut ids = vec![];
        for i in 0..5 {
            let ImportOutcome::Imported { image_id, .. } =
                ds.import(file("Ada", png_bytes(40 + i, 40))).unwrap().remove(0)
            else {
                panic!()
            };
            ids.push(image_id);
        }
        ds.import(file("Bob", png_bytes(90, 90))).unwrap().remove(0);
        let ada = ds.image(ids[0]).unwrap().identity_id;
        let (first, next) = ds.images_page(None, Some(ada), 0, 2).unwrap();
        assert_eq!(first.iter().map(|i| i.id).collect::<Vec<_>>(), ids[..2]);
        let (second, next2) = ds.images_page(None, Some(ada), next.unwrap(), 10).unwrap();
        assert_eq!(second.iter().map(|i| i.id).collect::<Vec<_>>(), ids[2..]);
        assert_eq!(next2, None);
        // Embeddings under any model go with the image, also models not in the registry.
        for model in ["descriptor/v1", "gaml/1"] {
            ds.store.put_embedding(model, ids[0], &[0.5; 4]).unwrap();
        }
        ds.store.put_embedding("descriptor/v1", ids[1], &[0.25; 4]).unwrap();
        assert_eq!(ds.delete(ids[0]).unwrap().embeddings_removed, 2);
        assert_eq!(ds.store.embedding("descriptor/v1", ids[0]).unwrap(), None);
        assert_eq!(ds.store.embedding("gaml/1", ids[0]).unwrap(), None);
        assert_eq!(ds.store.embedding("descriptor/v1", ids[1]).unwrap(), Some(vec![0.25; 4]));
        assert!(matches!(ds.image(ids[0]), Err(DatasetError::ImageNotFound(_))));
        assert_eq!(ds.identity(ada).unwrap().image_count, 4);
        // The bytes can be imported again once deleted.
        assert!(matches!(ds.import(file("Ada", png_bytes(40, 40))).unwrap().remove(0), ImportOutcome::Imported { .. }));
    }
}
