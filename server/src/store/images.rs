//! Atomic writes of images: the record, its bytes, the hash index and its identity change
//! together or not at all.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::{
    decode, decode_id, encode, id_key, id_pair_key, now_millis, FaceRecord, IdentityRecord, ImageRecord, Store,
    StoreError,
};

/// An image ready to be stored: validated, decoded and cropped by the dataset module.
#[derive(Debug, Clone)]
pub struct InsertImage {
    pub dataset: String,
    pub identity: String,
    pub file_name: String,
    pub sha256: [u8; 32],
    pub format: i32,
    pub width: u32,
    pub height: u32,
    pub original: Vec<u8>,
    pub face_png: Vec<u8>,
    /// The detected face, in detect mode.
    pub face: Option<FaceRecord>,
}

/// What [`Store::insert_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertedImage {
    New {
        image_id: u64,
        identity_id: u64,
    },
    /// The same bytes were stored before as this image.
    Duplicate {
        image_id: u64,
    },
}

/// What [`Store::delete_image`] removed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedImage {
    pub image: ImageRecord,
    /// Pairs (proposed or gold) removed with the image.
    pub removed_pairs: Vec<u64>,
    pub embeddings_removed: usize,
}

/// Why an image transaction stopped without writing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Abort {
    Duplicate(u64),
    Missing,
}

/// The key of an identity's name index entry.
pub(super) fn identity_name_key(dataset: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(dataset.len() + 1 + name.len());
    key.extend_from_slice(dataset.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

pub(super) fn abort_on<T>(e: T) -> ConflictableTransactionError<Abort>
where
    StoreError: From<T>,
{
    // Record decoding errors inside a transaction surface as storage errors: the data is bad.
    let err = StoreError::from(e);
    ConflictableTransactionError::Storage(match err {
        StoreError::Sled(e) => e,
        other => sled::Error::ReportableBug(other.to_string()),
    })
}

impl Store {
    pub fn image(&self, id: u64) -> Result<Option<ImageRecord>, StoreError> {
        self.images.get(&id_key(id))
    }

    pub fn has_image(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.images.get_raw(&id_key(id))?.is_some())
    }

    pub fn has_images(&self) -> bool {
        !self.images.is_empty()
    }

    /// Image records in id order from `start_id`.
    pub fn images_from(&self, start_id: u64) -> impl Iterator<Item = Result<ImageRecord, StoreError>> + '_ {
        self.images.scan_from::<ImageRecord>(&id_key(start_id)).map(|item| Ok(item?.1))
    }

    /// An image's bytes exactly as imported.
    pub fn image_original(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.image_originals.get_raw(&id_key(id))?.map(|v| v.to_vec()))
    }

    /// An image's normalised face crop, PNG.
    pub fn image_face(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.image_faces.get_raw(&id_key(id))?.map(|v| v.to_vec()))
    }

    pub fn identity(&self, id: u64) -> Result<Option<IdentityRecord>, StoreError> {
        self.identities.get(&id_key(id))
    }

    /// Identity records in id order from `start_id`.
    pub fn identities_from(&self, start_id: u64) -> impl Iterator<Item = Result<IdentityRecord, StoreError>> + '_ {
        self.identities.scan_from::<IdentityRecord>(&id_key(start_id)).map(|item| Ok(item?.1))
    }

    /// The ids of one identity's images in id order, from `start_id`.
    pub fn image_ids_of_identity_from(
        &self,
        identity_id: u64,
        start_id: u64,
    ) -> impl Iterator<Item = Result<u64, StoreError>> + '_ {
        self.identity_images
            .keys_with_prefix_from(&id_key(identity_id), &id_pair_key(identity_id, start_id))
            .map(|key| decode_id("identity_images", &key?[8..]))
    }

    /// Stores a new image, creating its identity when needed. Bytes already stored (same
    /// SHA-256) are not stored twice: the earlier image's id is returned instead.
    pub fn insert_image(&self, new: &InsertImage) -> Result<InsertedImage, StoreError> {
        if let Some(existing) = self.image_hashes.get_id(&new.sha256)? {
            return Ok(InsertedImage::Duplicate { image_id: existing });
        }
        let name_key = identity_name_key(&new.dataset, &new.identity);
        // Ids are taken outside the transaction; one lost to a duplicate race leaves a gap,
        // which is harmless: ids are unique and increasing, not dense.
        let fresh_identity_id = match self.identity_names.get_id(&name_key)? {
            Some(_) => None,
            None => Some(self.next_id("identities")?),
        };
        let image_id = self.next_id("images")?;
        let trees = [
            self.images.tree.clone(),
            self.image_originals.tree.clone(),
            self.image_faces.tree.clone(),
            self.image_hashes.tree.clone(),
            self.identities.tree.clone(),
            self.identity_names.tree.clone(),
            self.identity_images.tree.clone(),
        ];
        let result = trees.as_slice().transaction(|tx: &Vec<TransactionalTree>| {
            let [images, originals, faces, hashes, identities, names, identity_images] = &tx[..] else {
                unreachable!("seven trees were given")
            };
            if let Some(existing) = hashes.get(new.sha256)? {
                let id = super::decode_id("image_hashes", &existing).map_err(abort_on)?;
                return Err(ConflictableTransactionError::Abort(Abort::Duplicate(id)));
            }
            let mut identity = match names.get(&name_key)? {
                Some(id_bytes) => {
                    let id = super::decode_id("identity_names", &id_bytes).map_err(abort_on)?;
                    let bytes =
                        identities.get(id_key(id))?.ok_or(ConflictableTransactionError::Abort(Abort::Missing))?;
                    decode::<IdentityRecord>("identities", &bytes).map_err(abort_on)?
                }
                None => {
                    let id = fresh_identity_id.ok_or(ConflictableTransactionError::Abort(Abort::Missing))?;
                    names.insert(name_key.as_slice(), &id_key(id))?;
                    IdentityRecord { id, dataset: new.dataset.clone(), name: new.identity.clone(), image_count: 0 }
                }
            };
            identity.image_count += 1;
            identities.insert(&id_key(identity.id), encode(&identity))?;
            let record = ImageRecord {
                id: image_id,
                dataset: new.dataset.clone(),
                identity_id: identity.id,
                file_name: new.file_name.clone(),
                sha256: new.sha256.to_vec(),
                format: new.format,
                width: new.width,
                height: new.height,
                byte_size: new.original.len() as u64,
                create_millis: now_millis(),
                face: new.face.clone(),
            };
            images.insert(&id_key(image_id), encode(&record))?;
            originals.insert(&id_key(image_id), new.original.as_slice())?;
            faces.insert(&id_key(image_id), new.face_png.as_slice())?;
            hashes.insert(&new.sha256, &id_key(image_id))?;
            identity_images.insert(&id_pair_key(identity.id, image_id), &[])?;
            Ok(identity.id)
        });
        match result {
            Ok(identity_id) => Ok(InsertedImage::New { image_id, identity_id }),
            Err(TransactionError::Abort(Abort::Duplicate(image_id))) => Ok(InsertedImage::Duplicate { image_id }),
            // The identity vanished between the two reads: it was never deleted by any code
            // path, so this can only be a concurrent first insert; retry once from the top.
            Err(TransactionError::Abort(Abort::Missing)) => self.insert_image(new),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// Deletes an image, its bytes, its hash entry, the pairs it takes part in and every
    /// embedding of it; the identity's image count drops by one. Returns `None` when no such image exists.
    pub fn delete_image(&self, image_id: u64) -> Result<Option<DeletedImage>, StoreError> {
        let Some(image) = self.images.get::<ImageRecord>(&id_key(image_id))? else {
            return Ok(None);
        };
        // Pairs the image takes part in go with it, with their votes and labels: a pair of a
        // deleted face can't be labeled, and votes on it would describe a face that is gone.
        let pairs = self.pairs_of_image_with_votes(image_id)?;
        let mut trees = vec![
            self.images.tree.clone(),
            self.image_originals.tree.clone(),
            self.image_faces.tree.clone(),
            self.image_hashes.tree.clone(),
            self.identities.tree.clone(),
            self.identity_images.tree.clone(),
        ];
        trees.extend(self.pair_trees());
        let result = trees.as_slice().transaction(|tx: &Vec<TransactionalTree>| {
            let [images, originals, faces, hashes, identities, identity_images, pair_trees @ ..] = &tx[..] else {
                unreachable!("image and pair trees were given")
            };
            Store::remove_pairs_tx(&pairs, pair_trees)?;
            if images.remove(&id_key(image_id))?.is_none() {
                return Err(ConflictableTransactionError::Abort(Abort::Missing));
            }
            originals.remove(&id_key(image_id))?;
            faces.remove(&id_key(image_id))?;
            hashes.remove(image.sha256.as_slice())?;
            identity_images.remove(&id_pair_key(image.identity_id, image_id))?;
            if let Some(bytes) = identities.get(id_key(image.identity_id))? {
                let mut identity = decode::<IdentityRecord>("identities", &bytes).map_err(abort_on)?;
                identity.image_count = identity.image_count.saturating_sub(1);
                identities.insert(&id_key(identity.id), encode(&identity))?;
            }
            Ok(())
        });
        match result {
            Ok(()) => self.gallery_changed(),
            Err(TransactionError::Abort(_)) => return Ok(None),
            Err(TransactionError::Storage(e)) => return Err(StoreError::Sled(e)),
        }
        // Embeddings are derived data; removing them after the image is gone is safe to repeat
        // and never leaves an image without its record.
        let embeddings_removed = self.remove_embeddings_of(image_id)?;
        Ok(Some(DeletedImage {
            image,
            removed_pairs: pairs.into_iter().map(|(id, _)| id).collect(),
            embeddings_removed,
        }))
    }
}
