//! `facesim loop ...`: the closed loop of rounds (propose with the newest model, label, retrain).

use clap::Subcommand;
use facesim_client::rounds::{self, round_note};
use facesim_client::{pb, Client, ClientError};

use super::pairs::{follow_proposal, SelectionArgs};

#[derive(Debug, Subcommand)]
pub enum LoopCommand {
    /// Propose the next round's pairs with the active (newest) model, as batches noted
    /// "round N".
    NextRound {
        #[command(flatten)]
        selection: SelectionArgs,
        /// Pairs to propose.
        #[arg(long, default_value_t = 500)]
        budget: u32,
        /// Favour the pairs the model is least sure of (distance nearest its threshold) over
        /// the nearest pairs.
        #[arg(long)]
        uncertain: bool,
        /// At most this many pairs per image (0 = no limit).
        #[arg(long, default_value_t = 0)]
        max_per_image: u32,
        /// Pairs per labeling batch.
        #[arg(long, default_value_t = 500)]
        batch_size: u32,
    },
    /// Per-round label counts and the metrics of the models trained on them.
    Report,
}

pub async fn run(client: &Client, command: LoopCommand) -> anyhow::Result<()> {
    match command {
        LoopCommand::NextRound { selection, budget, uncertain, max_per_image, batch_size } => {
            let round = rounds::next_round_number(client).await?;
            let model = match selection.model.as_str() {
                "" => {
                    client.models().get_active_model(pb::GetActiveModelRequest {}).await.map_err(ClientError::from)?
                }
                id => client
                    .models()
                    .get_model(pb::GetModelRequest { model_id: id.into() })
                    .await
                    .map_err(ClientError::from)?,
            }
            .into_inner();
            println!(
                "round {round}: proposing {budget} pairs with model {} ({})",
                model.id,
                if uncertain { "nearest its threshold first" } else { "nearest first" }
            );
            let request = pb::ProposePairsRequest {
                selection: Some(pb::PairSelection { model_id: model.id.clone(), ..selection.to_proto() }),
                limit: Some(pb::propose_pairs_request::Limit::Budget(budget)),
                max_pairs_per_image: max_per_image,
                exclude_existing: Some(true),
                batch_size,
                order: if uncertain { pb::ProposalOrder::Uncertain } else { pb::ProposalOrder::Nearest } as i32,
                approximate: false,
                note: round_note(round),
                start_closed: false,
                ..Default::default()
            };
            let job = client.proposals().propose_pairs(request).await.map_err(ClientError::from)?.into_inner();
            follow_proposal(client, job.id).await
        }
        LoopCommand::Report => {
            print!("{}", format_report(&rounds::report(client).await?));
            Ok(())
        }
    }
}

/// The report as text: one table of rounds, one of models.
pub fn format_report(report: &rounds::LoopReport) -> String {
    let mut out = String::new();
    out.push_str("round  batches   pairs  labeled  similar  proposed by\n");
    for r in &report.rounds {
        let similar = if r.labeled > 0 { r.labeled_similar as f64 / r.labeled as f64 } else { 0.0 };
        out.push_str(&format!(
            "{:>5}  {:>7}  {:>6}  {:>7}  {:>6.1}%  {}\n",
            r.round,
            r.batch_ids.len(),
            r.pairs,
            r.labeled,
            100.0 * similar,
            r.proposed_by.join(", ")
        ));
    }
    if report.rounds.is_empty() {
        out.push_str("    (no rounds yet: `facesim loop next-round` proposes the first)\n");
    }
    if report.other_batches > 0 {
        out.push_str(&format!("{} batches belong to no round\n", report.other_batches));
    }
    out.push_str(
        "\nmodel                rounds    labels  test pairs  test AUC  95% CI           MCC     descriptor AUC  MCC\n",
    );
    for m in &report.models {
        let rounds = if m.rounds.is_empty() {
            "-".to_string()
        } else {
            m.rounds.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        };
        let ci = m.auc_ci.map_or_else(|| "-".to_string(), |(low, high)| format!("[{low:.3}, {high:.3}]"));
        out.push_str(&format!(
            "{:<20} {:<8} {:>7}  {:>10}  {:>8.4}  {:<15}  {:>6.3}  {:>14.4}  {:>6.3}{}\n",
            m.id,
            rounds,
            m.label_count,
            format!("{}+{}", m.test_classes.0, m.test_classes.1),
            m.test_pairs_auc,
            ci,
            m.mcc,
            m.baseline_auc,
            m.baseline_mcc,
            if m.active { "  (active)" } else { "" }
        ));
    }
    if report.models.is_empty() {
        out.push_str("    (no trained models yet: `facesim train start`)\n");
    }
    if !report.models.iter().any(|m| m.active) {
        out.push_str("active model: descriptor/v1 (no trained model was shown better)\n");
    }
    out.push_str("test pairs: similar+dissimilar; 95% CI: stratified bootstrap of the test AUC\n");
    out
}
