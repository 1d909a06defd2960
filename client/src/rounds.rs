//! Labeling rounds of the closed loop: propose with the newest model, label, retrain, and again.
//!
//! A round is the set of labeling batches whose note is `round N` (as `facesim loop next-round`
//! writes it). Models record the batches their labels came from, so each model's rounds follow
//! from its `batch_ids`.

use std::collections::BTreeMap;

use crate::{pb, Client, ClientError};

/// The round a batch note names: `round 3` → 3.
pub fn round_of(note: &str) -> Option<u32> {
    let rest = note.trim().strip_prefix("round")?;
    let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&n| n > 0)
}

/// The note `facesim loop next-round` gives the batches of round `n`.
pub fn round_note(n: u32) -> String {
    format!("round {n}")
}

/// Every labeling batch, oldest first.
pub async fn all_batches(client: &Client) -> Result<Vec<pb::Batch>, ClientError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page =
            client.proposals().list_batches(pb::ListBatchesRequest { page_size: 1000, page_token }).await?.into_inner();
        out.extend(page.batches);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    out.sort_by_key(|b| b.id);
    Ok(out)
}

/// Every registered model (the descriptor first).
pub async fn all_models(client: &Client) -> Result<Vec<pb::Model>, ClientError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page =
            client.models().list_models(pb::ListModelsRequest { page_size: 1000, page_token }).await?.into_inner();
        out.extend(page.models);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(out)
}

/// The number the next round gets: one past the highest so far.
pub async fn next_round_number(client: &Client) -> Result<u32, ClientError> {
    let batches = all_batches(client).await?;
    Ok(batches.iter().filter_map(|b| round_of(&b.note)).max().unwrap_or(0) + 1)
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundSummary {
    pub round: u32,
    pub batch_ids: Vec<u64>,
    /// The models whose distances proposed the round's pairs.
    pub proposed_by: Vec<String>,
    pub pairs: u64,
    /// Pairs with a final (2-of-3) label.
    pub labeled: u64,
    pub labeled_similar: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSummary {
    pub id: String,
    pub active: bool,
    /// Rounds whose labels the model was trained on.
    pub rounds: Vec<u32>,
    pub label_count: u64,
    pub test_pairs_auc: f64,
    pub mcc: f64,
    /// The pretrained descriptor on the same test pairs.
    pub baseline_auc: f64,
    pub baseline_mcc: f64,
    /// The test split by class (similar, dissimilar) and the model's AUC interval, if recorded.
    pub test_classes: (u64, u64),
    pub auc_ci: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopReport {
    pub rounds: Vec<RoundSummary>,
    /// Batches outside any round (proposed by hand with another note).
    pub other_batches: usize,
    /// Trained models, oldest first.
    pub models: Vec<ModelSummary>,
}

/// Per-round label counts and the models trained on them.
pub async fn report(client: &Client) -> Result<LoopReport, ClientError> {
    let batches = all_batches(client).await?;
    let mut rounds: BTreeMap<u32, RoundSummary> = BTreeMap::new();
    let mut round_of_batch = BTreeMap::new();
    let mut other_batches = 0;
    for batch in &batches {
        let Some(n) = round_of(&batch.note) else {
            other_batches += 1;
            continue;
        };
        round_of_batch.insert(batch.id, n);
        let progress = client
            .labeling()
            .get_batch_progress(pb::GetBatchProgressRequest { batch_id: batch.id })
            .await?
            .into_inner();
        let round = rounds.entry(n).or_insert_with(|| RoundSummary { round: n, ..Default::default() });
        round.batch_ids.push(batch.id);
        if !round.proposed_by.contains(&batch.model_id) {
            round.proposed_by.push(batch.model_id.clone());
        }
        round.pairs += u64::from(batch.pair_count);
        round.labeled += progress.labeled_similar + progress.labeled_dissimilar;
        round.labeled_similar += progress.labeled_similar;
    }
    let models = all_models(client)
        .await?
        .into_iter()
        .filter(|m| m.training_job_id != 0)
        .map(|m| {
            let mut used: Vec<u32> = m.batch_ids.iter().filter_map(|b| round_of_batch.get(b).copied()).collect();
            used.sort_unstable();
            used.dedup();
            let scores = m.scores.clone().unwrap_or_default();
            let baseline = m.baseline.clone().unwrap_or_default();
            ModelSummary {
                active: m.state == pb::ModelState::Active as i32,
                id: m.id,
                rounds: used,
                label_count: m.label_count,
                test_pairs_auc: scores.roc_auc,
                mcc: scores.mcc,
                baseline_auc: baseline.roc_auc,
                baseline_mcc: baseline.mcc,
                test_classes: (scores.similar_pairs, scores.dissimilar_pairs),
                auc_ci: scores.roc_auc_ci.map(|i| (i.low, i.high)),
            }
        })
        .collect();
    Ok(LoopReport { rounds: rounds.into_values().collect(), other_batches, models })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_notes_are_read_back() {
        for n in [1, 2, 17] {
            assert_eq!(round_of(&round_note(n)), Some(n));
        }
        assert_eq!(round_of("round 3: after the CNN"), Some(3));
        assert_eq!(round_of("  round  4 "), Some(4));
        assert_eq!(round_of("round 0"), None);
        assert_eq!(round_of("round"), None);
        assert_eq!(round_of("first round 2"), None);
        assert_eq!(round_of(""), None);
    }
}
