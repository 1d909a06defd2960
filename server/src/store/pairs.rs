//! Proposed pairs and their labeling batches. A proposal's pairs, their indexes and its batches
//! are written in one transaction, so a crash leaves either the whole proposal or none of it.

use std::collections::HashSet;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::{decode, decode_id, encode, id_key, id_pair_key, now_millis, BatchRecord, PairRecord, Store, StoreError};

/// `PairState::Pending` of the API.
pub const PAIR_PENDING: i32 = 1;
/// `BatchState::Open` of the API.
pub const BATCH_OPEN: i32 = 1;
/// `BatchState::Closed` of the API.
pub const BATCH_CLOSED: i32 = 2;

/// A pair to store; `image_a < image_b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewPair {
    pub image_a: u64,
    pub image_b: u64,
    pub identity_a: u64,
    pub identity_b: u64,
    pub distance: f32,
}

/// A proposal's result, ready to store.
#[derive(Debug, Clone)]
pub struct NewProposal<'a> {
    pub model_id: &'a str,
    pub job_id: u64,
    pub note: &'a str,
    pub open: bool,
    pub batch_size: usize,
    /// In the order of their batches; pair ids follow it.
    pub pairs: &'a [NewPair],
    /// Recorded on the batches: the seed the pairs were shuffled with, if they were.
    pub shuffle_seed: Option<u64>,
}

/// What [`Store::insert_proposal`] stored.
#[derive(Debug, Clone, Default)]
pub struct StoredProposal {
    pub batches: Vec<BatchRecord>,
    pub pairs: usize,
    /// Pairs another proposal stored first (a concurrent proposal of the same images).
    pub already_proposed: usize,
}

impl Store {
    /// Every image pair proposed so far, as `(image_a, image_b)` with `image_a < image_b`.
    pub fn proposed_pairs(&self) -> Result<HashSet<(u64, u64)>, StoreError> {
        let mut out = HashSet::with_capacity(self.pair_index.len());
        for key in self.pair_index.tree.iter().keys() {
            let key = key?;
            if key.len() != 16 {
                return Err(StoreError::BadKey { tree: "pair_index", expected: 16, found: key.len() });
            }
            out.insert((decode_id("pair_index", &key[..8])?, decode_id("pair_index", &key[8..])?));
        }
        Ok(out)
    }

    /// Stores a proposal: pairs in order with fresh ids, cut into batches of `batch_size`.
    /// Pairs that exist already are left out. Each batch is written in one transaction (with
    /// its pairs and their indexes), so a crash leaves whole batches; a proposal run again
    /// stores just the pairs that are missing.
    pub fn insert_proposal(&self, proposal: &NewProposal<'_>) -> Result<StoredProposal, StoreError> {
        let size = proposal.batch_size.max(1);
        let mut stored = StoredProposal::default();
        let mut fresh = Vec::with_capacity(proposal.pairs.len());
        for new in proposal.pairs {
            if self.pair_index.get_raw(&id_pair_key(new.image_a, new.image_b))?.is_some() {
                stored.already_proposed += 1;
            } else {
                fresh.push(*new);
            }
        }
        let now = now_millis();
        let trees = [
            self.pairs.tree.clone(),
            self.pair_index.tree.clone(),
            self.batches.tree.clone(),
            self.batch_pairs.tree.clone(),
            self.image_pairs.tree.clone(),
        ];
        for chunk in fresh.chunks(size) {
            let first_pair = self.reserve_ids("pairs", chunk.len() as u64)?;
            let batch_id = self.next_id("batches")?;
            let result = trees.as_slice().transaction(|tx: &Vec<TransactionalTree>| {
                let [pairs, index, batches, batch_pairs, image_pairs] = &tx[..] else {
                    unreachable!("five trees were given")
                };
                let mut batch = BatchRecord {
                    id: batch_id,
                    state: if proposal.open { BATCH_OPEN } else { BATCH_CLOSED },
                    pair_count: 0,
                    proposal_job_id: proposal.job_id,
                    model_id: proposal.model_id.to_string(),
                    note: proposal.note.to_string(),
                    create_millis: now,
                    shuffle_seed: proposal.shuffle_seed,
                };
                let mut raced = 0;
                for (i, new) in chunk.iter().enumerate() {
                    let pair_key = id_pair_key(new.image_a, new.image_b);
                    // Another proposal may have stored the pair since the check above.
                    if index.get(pair_key)?.is_some() {
                        raced += 1;
                        continue;
                    }
                    let id = first_pair + i as u64;
                    let record = PairRecord {
                        id,
                        image_a: new.image_a,
                        image_b: new.image_b,
                        identity_a: new.identity_a,
                        identity_b: new.identity_b,
                        distance: new.distance,
                        model_id: proposal.model_id.to_string(),
                        batch_id,
                        state: PAIR_PENDING,
                        votes: 0,
                        create_millis: now,
                        proposal_job_id: proposal.job_id,
                        gold_answer: 0,
                    };
                    batch.pair_count += 1;
                    pairs.insert(&id_key(id), encode(&record))?;
                    index.insert(&pair_key, &id_key(id))?;
                    batch_pairs.insert(&id_pair_key(batch_id, id), &[])?;
                    image_pairs.insert(&id_pair_key(new.image_a, id), &[])?;
                    image_pairs.insert(&id_pair_key(new.image_b, id), &[])?;
                }
                if batch.pair_count > 0 {
                    batches.insert(&id_key(batch_id), encode(&batch))?;
                }
                Ok((batch, raced))
            });
            let (batch, raced) = result.map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => StoreError::Sled(sled::Error::ReportableBug("aborted".into())),
            })?;
            stored.already_proposed += raced;
            stored.pairs += batch.pair_count as usize;
            if batch.pair_count > 0 {
                stored.batches.push(batch);
            }
        }
        Ok(stored)
    }

    /// Every pair (proposed and gold), in id order.
    pub fn pairs_from(&self, start_id: u64) -> impl Iterator<Item = Result<PairRecord, StoreError>> + '_ {
        self.pairs.scan_from::<PairRecord>(&id_key(start_id)).map(|item| Ok(item?.1))
    }

    /// Every batch, in id order.
    pub fn all_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        self.batches.scan_from::<BatchRecord>(&id_key(0)).map(|item| Ok(item?.1)).collect()
    }

    pub fn pair(&self, id: u64) -> Result<Option<PairRecord>, StoreError> {
        self.pairs.get(&id_key(id))
    }

    /// Pairs in id order from `start` (inclusive), only those of `batch_id` unless it is 0.
    /// Returns the page and the first id of the next page.
    pub fn pairs_page(
        &self,
        batch_id: u64,
        start: u64,
        limit: usize,
    ) -> Result<(Vec<PairRecord>, Option<u64>), StoreError> {
        let mut out = Vec::new();
        if batch_id == 0 {
            for item in self.pairs.scan_from::<PairRecord>(&id_key(start)) {
                let (_, pair) = item?;
                if out.len() == limit {
                    return Ok((out, Some(pair.id)));
                }
                out.push(pair);
            }
        } else {
            let prefix = id_key(batch_id);
            for key in self.batch_pairs.keys_with_prefix_from(&prefix, &id_pair_key(batch_id, start)) {
                let id = decode_id("batch_pairs", &key?[8..])?;
                if out.len() == limit {
                    return Ok((out, Some(id)));
                }
                // A pair removed with its image leaves no entry; a missing record is skipped.
                if let Some(pair) = self.pair(id)? {
                    out.push(pair);
                }
            }
        }
        Ok((out, None))
    }

    pub fn batch(&self, id: u64) -> Result<Option<BatchRecord>, StoreError> {
        self.batches.get(&id_key(id))
    }

    /// Batches in id order from `start` (inclusive).
    pub fn batches_page(&self, start: u64, limit: usize) -> Result<(Vec<BatchRecord>, Option<u64>), StoreError> {
        let mut out = Vec::new();
        for item in self.batches.scan_from::<BatchRecord>(&id_key(start)) {
            let (_, batch) = item?;
            if out.len() == limit {
                return Ok((out, Some(batch.id)));
            }
            out.push(batch);
        }
        Ok((out, None))
    }

    /// Sets a batch's state; `None` when there is no such batch.
    pub fn set_batch_state(&self, id: u64, state: i32) -> Result<Option<BatchRecord>, StoreError> {
        let mut found = None;
        let mut failure = None;
        self.batches.tree.fetch_and_update(id_key(id), |old| {
            let bytes = old?;
            match decode::<BatchRecord>("batches", bytes) {
                Ok(mut batch) => {
                    batch.state = state;
                    let encoded = encode(&batch);
                    found = Some(batch);
                    Some(encoded)
                }
                Err(e) => {
                    failure = Some(e);
                    Some(bytes.to_vec())
                }
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// The pairs an image takes part in, by id.
    pub(super) fn pair_ids_of_image(&self, image_id: u64) -> Result<Vec<u64>, StoreError> {
        let prefix = id_key(image_id);
        self.image_pairs
            .keys_with_prefix_from(&prefix, &prefix)
            .map(|key| decode_id("image_pairs", &key?[8..]))
            .collect()
    }

    /// The trees [`Store::remove_pairs_tx`] works on, in its order.
    pub(super) fn pair_trees(&self) -> [sled::Tree; 11] {
        [
            self.pairs.tree.clone(),
            self.pair_index.tree.clone(),
            self.batches.tree.clone(),
            self.batch_pairs.tree.clone(),
            self.image_pairs.tree.clone(),
            self.gold_pairs.tree.clone(),
            self.labels.tree.clone(),
            self.votes.tree.clone(),
            self.pair_votes.tree.clone(),
            self.lease_votes.tree.clone(),
            self.annotator_votes.tree.clone(),
        ]
    }

    /// The pairs an image takes part in with their vote ids, read before a removal.
    pub(super) fn pairs_of_image_with_votes(&self, image_id: u64) -> Result<Vec<(u64, Vec<u64>)>, StoreError> {
        self.pair_ids_of_image(image_id)?
            .into_iter()
            .map(|pair_id| Ok((pair_id, self.vote_ids_of_pair(pair_id)?)))
            .collect()
    }

    /// Removes pairs inside a transaction over [`Store::pair_trees`]: records, indexes, batch
    /// counts, labels and votes.
    pub(super) fn remove_pairs_tx(
        pairs_and_votes: &[(u64, Vec<u64>)],
        tx: &[TransactionalTree],
    ) -> Result<(), ConflictableTransactionError<super::images::Abort>> {
        let [pairs, index, batches, batch_pairs, image_pairs, gold, labels, votes, pair_votes, lease_votes, annotator_votes] =
            tx
        else {
            unreachable!("eleven pair trees are given")
        };
        for (id, vote_ids) in pairs_and_votes {
            let id = *id;
            let Some(bytes) = pairs.remove(&id_key(id))? else { continue };
            let pair = decode::<PairRecord>("pairs", &bytes).map_err(super::images::abort_on)?;
            if index.get(id_pair_key(pair.image_a, pair.image_b))?.is_some_and(|v| v.as_ref() == id_key(id)) {
                index.remove(&id_pair_key(pair.image_a, pair.image_b))?;
            }
            batch_pairs.remove(&id_pair_key(pair.batch_id, id))?;
            image_pairs.remove(&id_pair_key(pair.image_a, id))?;
            image_pairs.remove(&id_pair_key(pair.image_b, id))?;
            gold.remove(&id_key(id))?;
            labels.remove(&id_key(id))?;
            if let Some(bytes) = batches.get(id_key(pair.batch_id))? {
                let mut batch = decode::<BatchRecord>("batches", &bytes).map_err(super::images::abort_on)?;
                batch.pair_count = batch.pair_count.saturating_sub(1);
                batches.insert(&id_key(batch.id), encode(&batch))?;
            }
            for &vote_id in vote_ids {
                pair_votes.remove(&id_pair_key(id, vote_id))?;
                let Some(bytes) = votes.remove(&id_key(vote_id))? else { continue };
                let vote = decode::<super::VoteRecord>("votes", &bytes).map_err(super::images::abort_on)?;
                lease_votes.remove(&id_key(vote.lease_id))?;
                annotator_votes.remove(&id_pair_key(vote.annotator_id, vote_id))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: u64, b: u64, d: f32) -> NewPair {
        NewPair { image_a: a, image_b: b, identity_a: a * 10, identity_b: b * 10, distance: d }
    }

    #[test]
    fn proposals_are_batched_indexed_and_never_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pairs = [pair(1, 2, 0.1), pair(1, 3, 0.2), pair(2, 3, 0.3), pair(3, 4, 0.4), pair(4, 5, 0.5)];
        let proposal = NewProposal {
            model_id: "descriptor/v1",
            job_id: 7,
            note: "round 1",
            open: true,
            batch_size: 2,
            pairs: &pairs,
            shuffle_seed: Some(9),
        };
        let stored = store.insert_proposal(&proposal).unwrap();
        assert_eq!(stored.pairs, 5);
        assert_eq!(stored.batches.iter().map(|b| b.pair_count).collect::<Vec<_>>(), [2, 2, 1]);
        assert!(stored.batches.iter().all(|b| b.shuffle_seed == Some(9)), "the seed is recorded on every batch");
        let (all, next) = store.pairs_page(0, 0, 10).unwrap();
        assert_eq!(next, None);
        assert_eq!(
            all.iter().map(|p| (p.image_a, p.image_b)).collect::<Vec<_>>(),
            [(1, 2), (1, 3), (2, 3), (3, 4), (4, 5)]
        );
        let second = stored.batches[1].id;
        let (in_batch, _) = store.pairs_page(second, 0, 10).unwrap();
        assert_eq!(in_batch.iter().map(|p| p.distance).collect::<Vec<_>>(), [0.3, 0.4]);
        let (page, next) = store.pairs_page(second, 0, 1).unwrap();
        assert_eq!((page.len(), next), (1, Some(in_batch[1].id)));
        assert_eq!(store.proposed_pairs().unwrap().len(), 5);

        // The same pairs again: nothing new, no empty batch.
        let again = store.insert_proposal(&proposal).unwrap();
        assert_eq!((again.pairs, again.already_proposed, again.batches.len()), (0, 5, 0));

        let closed = store.set_batch_state(second, BATCH_CLOSED).unwrap().unwrap();
        assert_eq!(closed.state, BATCH_CLOSED);
        assert_eq!(store.batch(second).unwrap().unwrap().state, BATCH_CLOSED);
        assert!(store.set_batch_state(999, BATCH_OPEN).unwrap().is_none());
        assert_eq!(store.pair_ids_of_image(3).unwrap().len(), 3);
    }
}
