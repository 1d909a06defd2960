//! Votes, labels, annotators, gold pairs and instructions. A vote, its indexes, its pair's vote
//! count and (on the third vote) the pair's label are written in one transaction, together with
//! the other votes of its commit group.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::{
    decode, decode_id, encode, id_key, id_pair_key, now_millis, AnnotatorRecord, InstructionsRecord, LabelRecord,
    PairRecord, Store, StoreError, VoteRecord,
};

/// `PairState::Labeled` of the API.
pub const PAIR_LABELED: i32 = 2;

const INSTRUCTIONS_KEY: &[u8] = b"instructions";

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// What a vote changes besides the vote itself.
#[derive(Debug, Clone)]
pub struct VoteEffect {
    /// The pair's counted votes after this one.
    pub pair_votes: u32,
    /// The label, when this vote completes the pair.
    pub label: Option<LabelRecord>,
}

impl Store {
    /// Stores votes, in order, with their indexes, their pairs' new vote counts and, when given,
    /// labels: all in one transaction, so a group of concurrent votes costs one.
    pub fn record_votes(&self, votes: &[(VoteRecord, VoteEffect)]) -> Result<(), StoreError> {
        if votes.is_empty() {
            return Ok(());
        }
        let trees = [
            self.votes.tree.clone(),
            self.pair_votes.tree.clone(),
            self.lease_votes.tree.clone(),
            self.annotator_votes.tree.clone(),
            self.pairs.tree.clone(),
            self.labels.tree.clone(),
        ];
        trees
            .as_slice()
            .transaction(|tx: &Vec<TransactionalTree>| {
                let [votes_tree, pair_votes, lease_votes, annotator_votes, pairs, labels] = &tx[..] else {
                    unreachable!("six trees were given")
                };
                for (vote, effect) in votes {
                    // Reads see this transaction's earlier writes: two votes on one pair in a group
                    // leave the later count.
                    let Some(bytes) = pairs.get(id_key(vote.pair_id))? else {
                        // The pair was deleted (with its image) after the vote was decided: the
                        // deletion removed its votes, this one included.
                        continue;
                    };
                    votes_tree.insert(&id_key(vote.id), encode(vote))?;
                    pair_votes.insert(&id_pair_key(vote.pair_id, vote.id), &[])?;
                    lease_votes.insert(&id_key(vote.lease_id), &id_key(vote.id))?;
                    annotator_votes.insert(&id_pair_key(vote.annotator_id, vote.id), &[])?;
                    if vote.gold {
                        continue;
                    }
                    let mut pair = decode::<PairRecord>("pairs", &bytes).map_err(abort)?;
                    pair.votes = effect.pair_votes;
                    if let Some(label) = &effect.label {
                        pair.state = PAIR_LABELED;
                        labels.insert(&id_key(label.pair_id), encode(label))?;
                    }
                    pairs.insert(&id_key(pair.id), encode(&pair))?;
                }
                Ok(())
            })
            .map_err(tx_error)
    }

    /// The vote cast with a lease, if any (for retries, also after a restart).
    pub fn vote_of_lease(&self, lease_id: u64) -> Result<Option<VoteRecord>, StoreError> {
        match self.lease_votes.get_id(&id_key(lease_id))? {
            Some(vote_id) => self.votes.get(&id_key(vote_id)),
            None => Ok(None),
        }
    }

    /// The votes of a pair in id order.
    pub fn votes_of_pair(&self, pair_id: u64) -> Result<Vec<VoteRecord>, StoreError> {
        self.votes_indexed_by(&self.pair_votes, pair_id)
    }

    /// Every vote of an annotator in id order.
    pub fn votes_of_annotator(&self, user_id: u64) -> Result<Vec<VoteRecord>, StoreError> {
        self.votes_indexed_by(&self.annotator_votes, user_id)
    }

    /// The votes an index (`owner id ‖ vote id` → empty) lists under `owner`, in vote id order.
    fn votes_indexed_by(&self, index: &super::Tree, owner: u64) -> Result<Vec<VoteRecord>, StoreError> {
        let prefix = id_key(owner);
        let mut out = Vec::new();
        for key in index.keys_with_prefix_from(&prefix, &prefix) {
            let vote_id = decode_id(index.name(), &key?[8..])?;
            if let Some(vote) = self.votes.get::<VoteRecord>(&id_key(vote_id))? {
                out.push(vote);
            }
        }
        Ok(out)
    }

    /// Stops counting an annotator's votes on proposed pairs: each such pair loses a vote, and a
    /// labeled pair loses its label and needs a vote again. Returns the pairs that changed.
    pub fn exclude_votes_of(&self, user_id: u64) -> Result<Vec<u64>, StoreError> {
        let counted: Vec<VoteRecord> =
            self.votes_of_annotator(user_id)?.into_iter().filter(|v| v.counted && !v.gold).collect();
        let trees = [self.votes.tree.clone(), self.pairs.tree.clone(), self.labels.tree.clone()];
        trees
            .as_slice()
            .transaction(|tx: &Vec<TransactionalTree>| {
                let [votes, pairs, labels] = &tx[..] else { unreachable!("three trees were given") };
                let mut changed = Vec::new();
                for vote in &counted {
                    let mut vote = vote.clone();
                    vote.counted = false;
                    votes.insert(&id_key(vote.id), encode(&vote))?;
                    let Some(bytes) = pairs.get(id_key(vote.pair_id))? else { continue };
                    let mut pair = decode::<PairRecord>("pairs", &bytes).map_err(abort)?;
                    pair.votes = pair.votes.saturating_sub(1);
                    pair.state = super::PAIR_PENDING;
                    labels.remove(&id_key(pair.id))?;
                    pairs.insert(&id_key(pair.id), encode(&pair))?;
                    changed.push(pair.id);
                }
                Ok(changed)
            })
            .map_err(tx_error)
    }

    pub fn label(&self, pair_id: u64) -> Result<Option<LabelRecord>, StoreError> {
        self.labels.get(&id_key(pair_id))
    }

    /// Labels in pair id order from `start`; of one batch unless `batch_id` is 0.
    pub fn labels_page(
        &self,
        batch_id: u64,
        start: u64,
        limit: usize,
    ) -> Result<(Vec<LabelRecord>, Option<u64>), StoreError> {
        let mut out = Vec::new();
        if batch_id == 0 {
            for item in self.labels.scan_from::<LabelRecord>(&id_key(start)) {
                let (_, label) = item?;
                if out.len() == limit {
                    return Ok((out, Some(label.pair_id)));
                }
                out.push(label);
            }
            return Ok((out, None));
        }
        let prefix = id_key(batch_id);
        for key in self.batch_pairs.keys_with_prefix_from(&prefix, &id_pair_key(batch_id, start)) {
            let pair_id = decode_id("batch_pairs", &key?[8..])?;
            if let Some(label) = self.label(pair_id)? {
                if out.len() == limit {
                    return Ok((out, Some(pair_id)));
                }
                out.push(label);
            }
        }
        Ok((out, None))
    }

    /// Votes in id order from `start` (batch 0), or the votes of a batch's pairs in pair order
    /// from pair `start` (whole pairs per page, so a page may hold a few more than `limit`).
    pub fn votes_page(
        &self,
        batch_id: u64,
        start: u64,
        limit: usize,
    ) -> Result<(Vec<VoteRecord>, Option<u64>), StoreError> {
        let mut out = Vec::new();
        if batch_id == 0 {
            for item in self.votes.scan_from::<VoteRecord>(&id_key(start)) {
                let (_, vote) = item?;
                if out.len() == limit {
                    return Ok((out, Some(vote.id)));
                }
                out.push(vote);
            }
            return Ok((out, None));
        }
        let prefix = id_key(batch_id);
        for key in self.batch_pairs.keys_with_prefix_from(&prefix, &id_pair_key(batch_id, start)) {
            let pair_id = decode_id("batch_pairs", &key?[8..])?;
            if out.len() >= limit {
                return Ok((out, Some(pair_id)));
            }
            out.extend(self.votes_of_pair(pair_id)?);
        }
        Ok((out, None))
    }

    pub fn annotator(&self, user_id: u64) -> Result<AnnotatorRecord, StoreError> {
        Ok(self.annotators.get(&id_key(user_id))?.unwrap_or(AnnotatorRecord { user_id, ..Default::default() }))
    }

    /// Changes an annotator's record atomically.
    pub fn update_annotator(
        &self,
        user_id: u64,
        f: impl Fn(&mut AnnotatorRecord),
    ) -> Result<AnnotatorRecord, StoreError> {
        let mut failure = None;
        let updated = self.annotators.tree.update_and_fetch(id_key(user_id), |old| {
            let mut record = match old.map(|b| decode::<AnnotatorRecord>("annotators", b)) {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    failure = Some(e);
                    return old.map(<[u8]>::to_vec);
                }
                None => AnnotatorRecord { user_id, ..Default::default() },
            };
            f(&mut record);
            Some(encode(&record))
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let bytes = updated.expect("the update stores a record");
        decode("annotators", &bytes)
    }

    /// Every annotator with a record, in user id order.
    pub fn annotators(&self) -> Result<Vec<AnnotatorRecord>, StoreError> {
        self.annotators.scan_from::<AnnotatorRecord>(&id_key(0)).map(|r| r.map(|(_, a)| a)).collect()
    }

    pub fn instructions(&self) -> Result<Option<InstructionsRecord>, StoreError> {
        self.meta.get(INSTRUCTIONS_KEY)
    }

    pub fn set_instructions(&self, record: &InstructionsRecord) -> Result<(), StoreError> {
        self.meta.put(INSTRUCTIONS_KEY, record)
    }

    /// Stores gold pairs (outside any batch); returns their ids.
    pub fn insert_gold_pairs(&self, pairs: &[PairRecord]) -> Result<Vec<u64>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.reserve_ids("pairs", pairs.len() as u64)?;
        let now = now_millis();
        let trees = [self.pairs.tree.clone(), self.gold_pairs.tree.clone(), self.image_pairs.tree.clone()];
        trees
            .as_slice()
            .transaction(|tx: &Vec<TransactionalTree>| {
                let [records, gold, image_pairs] = &tx[..] else { unreachable!("three trees were given") };
                let mut ids = Vec::with_capacity(pairs.len());
                for (i, pair) in pairs.iter().enumerate() {
                    let id = first + i as u64;
                    let record = PairRecord { id, create_millis: now, ..pair.clone() };
                    records.insert(&id_key(id), encode(&record))?;
                    gold.insert(&id_key(id), &[])?;
                    image_pairs.insert(&id_pair_key(pair.image_a, id), &[])?;
                    image_pairs.insert(&id_pair_key(pair.image_b, id), &[])?;
                    ids.push(id);
                }
                Ok(ids)
            })
            .map_err(tx_error)
    }

    /// Ids of every gold pair.
    pub fn gold_pair_ids(&self) -> Result<Vec<u64>, StoreError> {
        self.gold_pairs.tree.iter().keys().map(|k| decode_id("gold_pairs", &k?)).collect()
    }

    /// The vote ids of a pair, for removals inside a transaction.
    pub(super) fn vote_ids_of_pair(&self, pair_id: u64) -> Result<Vec<u64>, StoreError> {
        let prefix = id_key(pair_id);
        self.pair_votes.keys_with_prefix_from(&prefix, &prefix).map(|key| decode_id("pair_votes", &key?[8..])).collect()
    }
}
