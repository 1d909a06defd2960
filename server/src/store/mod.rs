//! The sled store: the only module that imports sled. It owns the named trees, the schema
//! version, id sequences and the typed encoding of every record kept on disk.

mod commit;
mod embeddings;
mod images;
mod jobs;
mod labels;
mod models;
mod pairs;
mod records;
mod users;

use std::path::Path;

pub use commit::GroupCommit;
pub use images::{DeletedImage, InsertImage, InsertedImage};
pub use labels::{VoteEffect, PAIR_LABELED};
pub use pairs::{NewPair, NewProposal, StoredProposal, BATCH_CLOSED, BATCH_OPEN, PAIR_PENDING};
use prost::Message;
pub use records::{
    ActivationRecord, AnnotatorRecord, BatchRecord, ComparisonRecord, EpochRecord, EvaluationRecord, ExampleRecord,
    FaceRecord, IdentityRecord, ImageRecord, InstructionsRecord, JobRecord, LabelRecord, ModelRecord, PairRecord,
    PairSetRecord, ScoresRecord, TokenRecord, UserRecord, VoteRecord, SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALIDATION,
};
pub use users::UserInsert;

/// The on-disk layout version. Bumped on any incompatible change of keys or records; a store of
/// another version is refused instead of being misread.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema_version";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in tree `{tree}`: {source}")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("corrupt key in tree `{tree}`: expected {expected} bytes, found {found}")]
    BadKey { tree: &'static str, expected: usize, found: usize },
    #[error("record {id} of tree `{tree}` is missing")]
    Missing { tree: &'static str, id: u64 },
    #[error(
        "the data dir holds schema version {found}, this server understands version {expected}; \
         use a matching server version or a new data dir"
    )]
    SchemaMismatch { found: u32, expected: u32 },
    #[error("the data dir {dir} is in use by another process (is another facesim-server running on it?)")]
    Locked { dir: String },
}

/// How long [`Store::open`] waits for the data dir's lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A named sled tree together with its name, for error messages.
#[derive(Clone)]
pub(crate) struct Tree {
    name: &'static str,
    tree: sled::Tree,
}

/// The open store. Cheap to clone: every clone shares the same database. Its trees are private:
/// callers use the typed methods of this module's files, so the key layout is known here only.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Bumped on every change that alters a ranking gallery (embeddings written, images
    /// deleted), so in-memory indexes can tell that they are stale. Shared by all clones.
    gallery_changes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Schema version and id sequences.
    meta: Tree,
    /// `user id` → [`UserRecord`].
    users: Tree,
    /// `user name` → `user id`.
    user_names: Tree,
    /// `token id` → [`TokenRecord`].
    tokens: Tree,
    /// `sha256(token)` → `token id`.
    token_hashes: Tree,
    /// `image id` → [`ImageRecord`].
    images: Tree,
    /// `image id` → original bytes as imported.
    image_originals: Tree,
    /// `image id` → normalised face crop, PNG.
    image_faces: Tree,
    /// `sha256(original bytes)` → `image id`, for deduplication.
    image_hashes: Tree,
    /// `identity id` → [`IdentityRecord`].
    identities: Tree,
    /// `dataset \0 identity name` → `identity id`.
    identity_names: Tree,
    /// `identity id ‖ image id` → empty, to list one identity's images in order.
    identity_images: Tree,
    /// `model id \0 image id` → embedding (filled by the descriptor and models).
    embeddings: Tree,
    /// `pair id` → [`PairRecord`] (filled by proposal).
    pairs: Tree,
    /// `image a ‖ image b` (a < b) → `pair id`: each image pair is proposed at most once.
    pair_index: Tree,
    /// `image id ‖ pair id` → empty: the pairs of an image, removed with it.
    image_pairs: Tree,
    /// `batch id` → [`BatchRecord`].
    batches: Tree,
    /// `batch id ‖ pair id` → empty: a batch's pairs in order.
    batch_pairs: Tree,
    /// `vote id` → [`VoteRecord`].
    votes: Tree,
    /// `pair id ‖ vote id` → empty: a pair's votes.
    pair_votes: Tree,
    /// `lease id` → `vote id`: the vote cast with a lease, so a retried vote counts once.
    lease_votes: Tree,
    /// `user id ‖ vote id` → empty: an annotator's votes.
    annotator_votes: Tree,
    /// `user id` → [`AnnotatorRecord`].
    annotators: Tree,
    /// `pair id` → empty: the gold pairs (their records live in `pairs`).
    gold_pairs: Tree,
    /// `pair id` → [`LabelRecord`].
    labels: Tree,
    /// `job id` → job record (filled by background jobs).
    jobs: Tree,
    /// `model id` → [`ModelRecord`] (trained models; the descriptor is built in).
    models: Tree,
    /// `evaluation id` → [`EvaluationRecord`].
    evaluations: Tree,
}

impl Store {
    /// Opens (or creates) the store in `dir`, checking the schema version.
    ///
    /// sled holds an exclusive file lock while any handle to the database lives, and its
    /// background writer threads keep a handle for a moment after the last `Store` is dropped;
    /// so a lock held by someone is waited on for up to [`LOCK_WAIT`] before giving up with
    /// [`StoreError::Locked`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let db = loop {
            match sled::Config::new().path(dir).flush_every_ms(Some(200)).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if started.elapsed() >= LOCK_WAIT {
                        return Err(StoreError::Locked { dir: dir.display().to_string() });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let open = |name: &'static str| -> Result<Tree, StoreError> { Ok(Tree { name, tree: db.open_tree(name)? }) };
        let store = Store {
            meta: open("meta")?,
            users: open("users")?,
            user_names: open("user_names")?,
            tokens: open("tokens")?,
            token_hashes: open("token_hashes")?,
            images: open("images")?,
            image_originals: open("image_originals")?,
            image_faces: open("image_faces")?,
            image_hashes: open("image_hashes")?,
            identities: open("identities")?,
            identity_names: open("identity_names")?,
            identity_images: open("identity_images")?,
            embeddings: open("embeddings")?,
            pairs: open("pairs")?,
            pair_index: open("pair_index")?,
            image_pairs: open("image_pairs")?,
            batches: open("batches")?,
            batch_pairs: open("batch_pairs")?,
            votes: open("votes")?,
            pair_votes: open("pair_votes")?,
            lease_votes: open("lease_votes")?,
            annotator_votes: open("annotator_votes")?,
            annotators: open("annotators")?,
            gold_pairs: open("gold_pairs")?,
            labels: open("labels")?,
            jobs: open("jobs")?,
            models: open("models")?,
            evaluations: open("evaluations")?,
            db,
            gallery_changes: Default::default(),
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.meta.tree.get(SCHEMA_KEY)? {
            Some(bytes) => {
                let found = u32::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StoreError::BadKey {
                    tree: "meta",
                    expected: 4,
                    found: bytes.len(),
                })?);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::SchemaMismatch { found, expected: SCHEMA_VERSION });
                }
            }
            None => {
                self.meta.tree.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
            }
        }
        Ok(())
    }

    /// A number that changes whenever a gallery's content may have changed (see the field).
    pub fn gallery_version(&self) -> u64 {
        self.gallery_changes.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn gallery_changed(&self) {
        self.gallery_changes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Hands out the next id of a sequence: 1, 2, 3, ... never reused, also across restarts.
    pub fn next_id(&self, sequence: &str) -> Result<u64, StoreError> {
        self.reserve_ids(sequence, 1)
    }

    /// Reserves `n` consecutive ids of a sequence and returns the first.
    pub fn reserve_ids(&self, sequence: &str, n: u64) -> Result<u64, StoreError> {
        let key = format!("seq/{sequence}");
        let value = self.meta.tree.update_and_fetch(key.as_bytes(), |old| {
            let current = old.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some((current + n).to_be_bytes().to_vec())
        })?;
        let bytes = value.expect("sequence value was just written");
        Ok(u64::from_be_bytes(bytes.as_ref().try_into().expect("sequence values are 8 bytes")) - n + 1)
    }

    /// The last id handed out by a sequence (0 when none yet).
    pub fn peek_id(&self, sequence: &str) -> Result<u64, StoreError> {
        let key = format!("seq/{sequence}");
        match self.meta.tree.get(key.as_bytes())? {
            Some(bytes) => decode_id("meta", &bytes),
            None => Ok(0),
        }
    }

    /// Writes everything to disk. Callers await this before acknowledging a write, so that an
    /// acknowledged write survives a crash.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Blocking variant of [`Store::flush`] for synchronous code.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

impl Tree {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads and decodes one record.
    pub fn get<R: Message + Default>(&self, key: &[u8]) -> Result<Option<R>, StoreError> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(decode(self.name, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Encodes and stores one record.
    pub fn put<R: Message>(&self, key: &[u8], record: &R) -> Result<(), StoreError> {
        self.tree.insert(key, record.encode_to_vec())?;
        Ok(())
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.tree.get(key)?)
    }

    pub fn put_raw(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(key, value)?;
        Ok(())
    }

    pub fn get_id(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        self.tree.get(key)?.map(|v| decode_id(self.name, &v)).transpose()
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Records in key order, starting at `start` (inclusive).
    pub fn scan_from<R: Message + Default>(
        &self,
        start: &[u8],
    ) -> impl Iterator<Item = Result<(sled::IVec, R), StoreError>> + '_ {
        self.tree.range(start..).map(move |item| {
            let (key, value) = item?;
            Ok((key, decode(self.name, &value)?))
        })
    }

    /// Raw keys in order that start with `prefix`, beginning at `start` (inclusive).
    pub fn keys_with_prefix_from(
        &self,
        prefix: &[u8],
        start: &[u8],
    ) -> impl Iterator<Item = Result<sled::IVec, StoreError>> + '_ {
        let prefix = prefix.to_vec();
        self.tree
            .range(start..)
            .keys()
            .take_while(move |k| k.as_ref().map(|k| k.starts_with(&prefix)).unwrap_or(true))
            .map(|k| k.map_err(StoreError::from))
    }
}

/// Big-endian id key, so that sled's byte order is numeric order.
pub(super) fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The key of an `(a, b)` id pair, ordered by `a` then `b`.
pub(super) fn id_pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

/// Reads an id stored as an 8-byte big-endian value or key (part). Public, like [`decode`], so
/// that the fuzz tests can feed it arbitrary bytes.
pub fn decode_id(tree: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::BadKey { tree, expected: 8, found: bytes.len() })?;
    Ok(u64::from_be_bytes(arr))
}

/// Decodes a record of `tree`.
pub fn decode<R: Message + Default>(tree: &'static str, bytes: &[u8]) -> Result<R, StoreError> {
    R::decode(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

/// Encodes a record for a transactional insert.
pub(super) fn encode<R: Message>(record: &R) -> Vec<u8> {
    record.encode_to_vec()
}

/// Milliseconds since the Unix epoch, the time unit of every record.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_monotonic_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = Store::open(dir.path()).unwrap();
            let a = store.next_id("images").unwrap();
            let b = store.next_id("images").unwrap();
            assert_eq!((a, b), (1, 2));
            assert_eq!(store.next_id("users").unwrap(), 1, "sequences are independent");
            store.flush_blocking().unwrap();
            b
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_id("images").unwrap(), first + 1);
    }

    #[test]
    fn refuses_other_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.meta.put_raw(SCHEMA_KEY, &99u32.to_be_bytes()).unwrap();
            store.flush_blocking().unwrap();
        }
        match Store::open(dir.path()) {
            Err(StoreError::SchemaMismatch { found: 99, expected: SCHEMA_VERSION }) => {}
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("opened a store of another schema version"),
        }
    }

    #[test]
    fn records_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = UserRecord { id: 7, name: "ada".into(), role: 2, disabled: false, create_millis: 5 };
        store.users.put(&id_key(7), &user).unwrap();
        assert_eq!(store.users.get::<UserRecord>(&id_key(7)).unwrap(), Some(user));
        store.users.put_raw(&id_key(8), &[0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(store.users.get::<UserRecord>(&id_key(8)), Err(StoreError::Corrupt { tree: "users", .. })));
    }
}
