//! The closed loop over the API: round 1 is proposed with the descriptor and labeled by a
//! simulated crowd, a GAML model trained on it is activated, round 2 is proposed with that model
//! (the pairs it is least sure of first), labeled, and a second model learns from both rounds;
//! the loop report counts each round and names the rounds each model used.

use std::time::Duration;

use facesim_client::crowd::{annotator_clients, ensure_instructions, run_crowd, CrowdConfig, Truth};
use facesim_client::rounds::{self, round_note};
use facesim_client::{pb, Client};
use facesim_tests::{import_demo, wait_for_job, TestServer};
use tonic::Code;

use super::training::{hyper, train};

async fn propose(client: &Client, budget: u32, order: pb::ProposalOrder) -> pb::Job {
    let round = rounds::next_round_number(client).await.unwrap();
    let request = pb::ProposePairsRequest {
        selection: Some(pb::PairSelection { include_same_identity: true, ..Default::default() }),
        limit: Some(pb::propose_pairs_request::Limit::Budget(budget)),
        order: order as i32,
        note: round_note(round),
        // Ranked: the test checks the order of the uncertain pairs.
        batch_order: pb::BatchOrder::Ranked as i32,
        ..Default::default()
    };
    let job = client.proposals().propose_pairs(request).await.expect("propose").into_inner();
    let job = wait_for_job(client, job.id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    job
}

async fn pairs_of(client: &Client, batch_ids: &[u64]) -> Vec<pb::Pair> {
    let mut out = Vec::new();
    for &batch_id in batch_ids {
        let request = pb::ListPairsRequest { batch_id, page_size: 1000, ..Default::default() };
        out.extend(client.proposals().list_pairs(request).await.unwrap().into_inner().pairs);
    }
    out
}

/// Three annotators who call the nearer half of a round's pairs similar (so both classes get
/// labels whatever the faces), 10% of answers wrong on purpose.
async fn label_everything(client: &Client, round: &[pb::Pair], seed: u64) {
    let mut distances: Vec<f32> = round.iter().map(|p| p.distance).collect();
    distances.sort_by(f32::total_cmp);
    let crowd = annotator_clients(client, "looper", 3).await.unwrap();
    let config = CrowdConfig {
        truth: Truth::Distance(distances[distances.len() / 2]),
        error_rate: 0.1,
        answer_time: Duration::ZERO,
        max_votes: None,
        deadline: None,
        batch_id: 0,
        seed,
    };
    ensure_instructions(client).await.unwrap();
    run_crowd(client, crowd, config).await.unwrap();
}

async fn train_gaml_on_all_labels(client: &Client, name: &str) -> pb::Model {
    let request = pb::StartTrainingRequest {
        architecture: pb::Architecture::SiameseGaml as i32,
        data: Some(pb::start_training_request::Data::Labels(pb::LabelSource::default())),
        hyperparameters: hyper(3, 16, 5),
        name: name.into(),
        ..Default::default()
    };
    let (job, _) = train(client, request).await;
    client.models().get_model(pb::GetModelRequest { model_id: job.model_id }).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_propose_with_the_newest_model_and_models_record_their_rounds() {
    let server = TestServer::start_with(|c| c.min_answer_millis = 0).await;
    let researcher = server.admin().await;
    let report = import_demo(&researcher, 8).await;
    let job = wait_for_job(&researcher, report.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    let empty = rounds::report(&researcher).await.unwrap();
    assert!(empty.rounds.is_empty() && empty.models.is_empty());

    // Round 1, by the descriptor (the active model of a new server).
    let first = propose(&researcher, 60, pb::ProposalOrder::Nearest).await;
    let round1 = pairs_of(&researcher, &first.batch_ids).await;
    assert_eq!(round1.len(), 60);
    assert!(round1.iter().all(|p| p.model_id == "descriptor/v1"));
    label_everything(&researcher, &round1, 1).await;
    let model1 = train_gaml_on_all_labels(&researcher, "after round 1").await;
    assert_eq!(model1.batch_ids, first.batch_ids, "training on all labels records the batches they came from");
    assert_eq!(model1.label_count, 60);

    // UNCERTAIN needs a distance threshold and a budget; a model that doesn't exist is named.
    let bad = pb::ProposePairsRequest {
        selection: Some(pb::PairSelection { model_id: "gaml/99".into(), ..Default::default() }),
        limit: Some(pb::propose_pairs_request::Limit::Budget(5)),
        ..Default::default()
    };
    let err = researcher.proposals().propose_pairs(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("gaml/99"), "{}", err.message());

    // Round 2, by the newly activated model, nearest its decision threshold first.
    researcher
        .models()
        .activate_model(pb::ActivateModelRequest { model_id: model1.id.clone(), force: true })
        .await
        .unwrap();
    let second = propose(&researcher, 40, pb::ProposalOrder::Uncertain).await;
    assert!(second.message.contains("threshold"), "{}", second.message);
    let round2 = pairs_of(&researcher, &second.batch_ids).await;
    assert_eq!(round2.len(), 40);
    assert!(round2.iter().all(|p| p.model_id == model1.id));
    let before: std::collections::HashSet<(u64, u64)> = round1.iter().map(|p| (p.image_a, p.image_b)).collect();
    assert!(round2.iter().all(|p| !before.contains(&(p.image_a, p.image_b))), "no pair is proposed twice");

    // The distances are the model's own (recomputed from its embeddings) and come in order of
    // their distance from its threshold.
    let metric = model1.metric;
    let threshold = if metric == pb::DistanceMetric::Cosine as i32 {
        (2.0 - 2.0 * model1.threshold).max(0.0).sqrt()
    } else {
        model1.threshold
    };
    let embed = |id: u64| {
        let researcher = researcher.clone();
        let model_id = model1.id.clone();
        async move {
            let face = Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(id)), ..Default::default() });
            let e = researcher.ranking().embed(pb::EmbedRequest { face, model_id }).await.unwrap().into_inner();
            let mut v = e.embedding.unwrap().values;
            if metric == pb::DistanceMetric::Cosine as i32 {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
            }
            v
        }
    };
    for pair in &round2 {
        let (a, b) = (embed(pair.image_a).await, embed(pair.image_b).await);
        let d = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt();
        assert!((d - pair.distance).abs() < 1e-3, "pair {}: stored {} vs {d}", pair.id, pair.distance);
    }
    let gaps: Vec<f32> = round2.iter().map(|p| (p.distance - threshold).abs()).collect();
    assert!(gaps.windows(2).all(|w| w[0] <= w[1] + 1e-6), "nearest the threshold first: {gaps:?}");

    label_everything(&researcher, &round2, 2).await;
    let model2 = train_gaml_on_all_labels(&researcher, "after round 2").await;
    let mut both = [first.batch_ids.clone(), second.batch_ids.clone()].concat();
    both.sort_unstable();
    assert_eq!(model2.batch_ids, both);
    assert_eq!(model2.label_count, 100);

    let report = rounds::report(&researcher).await.unwrap();
    let counts: Vec<(u32, u64, u64)> = report.rounds.iter().map(|r| (r.round, r.pairs, r.labeled)).collect();
    assert_eq!(counts, vec![(1, 60, 60), (2, 40, 40)]);
    assert_eq!(report.rounds[0].proposed_by, vec!["descriptor/v1".to_string()]);
    assert_eq!(report.rounds[1].proposed_by, vec![model1.id.clone()]);
    assert!(report.rounds.iter().all(|r| r.labeled_similar <= r.labeled));
    let used: Vec<(&str, Vec<u32>, bool)> =
        report.models.iter().map(|m| (m.id.as_str(), m.rounds.clone(), m.active)).collect();
    assert_eq!(used, vec![(model1.id.as_str(), vec![1], true), (model2.id.as_str(), vec![1, 2], false)]);
    for m in &report.models {
        assert!((0.0..=1.0).contains(&m.test_pairs_auc) && (0.0..=1.0).contains(&m.baseline_auc), "{m:?}");
    }
    assert_eq!(rounds::next_round_number(&researcher).await.unwrap(), 3);
}

/// The look-alike crowd through the real API: with no strictness spread and no deliberate
/// mistakes, every label is the stated rule on the server's own estimates (EstimateTraits) and
/// descriptor distances (Compare) — and it is not identity: some pairs of one person are called
/// dissimilar or some pairs of two people similar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_look_alike_crowd_labels_by_apparent_age_gender_and_distance() {
    let server = TestServer::start_with(|c| c.min_answer_millis = 0).await;
    let researcher = server.admin().await;
    let report = import_demo(&researcher, 12).await;
    let job = wait_for_job(&researcher, report.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    let job = propose(&researcher, 120, pb::ProposalOrder::Nearest).await;
    let rule = facesim_client::crowd::LookAlike { max_age_gap: 8.0, max_distance: 0.6, spread: 0.0 };
    let crowd = annotator_clients(&researcher, "lookalike", 3).await.unwrap();
    let config = CrowdConfig {
        truth: Truth::LookAlike(rule),
        error_rate: 0.0,
        answer_time: Duration::ZERO,
        max_votes: None,
        deadline: None,
        batch_id: 0,
        seed: 5,
    };
    ensure_instructions(&researcher).await.unwrap();
    run_crowd(&researcher, crowd, config).await.unwrap();

    let request = pb::ListLabelsRequest { page_size: 1000, ..Default::default() };
    let labels = researcher.labeling().list_labels(request).await.unwrap().into_inner().labels;
    let proposed = pairs_of(&researcher, &job.batch_ids).await;
    assert_eq!(labels.len(), proposed.len(), "every proposed pair got its three votes");
    let (mut not_identity, mut similar) = (0, 0);
    for label in &labels {
        let request = pb::EstimateTraitsRequest { image_ids: vec![label.image_a, label.image_b] };
        let t = researcher.datasets().estimate_traits(request).await.unwrap().into_inner().traits;
        let face =
            |id: u64| Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(id)), ..Default::default() });
        let request =
            pb::CompareRequest { a: face(label.image_a), b: face(label.image_b), model_id: "descriptor/v1".into() };
        let distance = researcher.ranking().compare(request).await.unwrap().into_inner().score;
        let expected = (t[0].male_probability > 0.5) == (t[1].male_probability > 0.5)
            && (t[0].age - t[1].age).abs() <= 8.0
            && distance <= 0.6;
        let majority = if expected { pb::VoteChoice::Similar } else { pb::VoteChoice::Dissimilar };
        assert_eq!(label.majority, majority as i32, "pair {}: {t:?}, distance {distance}", label.pair_id);
        let unanimous = if expected { (3, 0) } else { (0, 3) };
        assert_eq!((label.similar_votes, label.dissimilar_votes), unanimous, "no spread, no mistakes: all agree");
        similar += usize::from(expected);
        not_identity += usize::from(expected != (label.identity_a == label.identity_b));
    }
    assert!(similar > 0 && similar < labels.len(), "both classes: {similar} of {}", labels.len());
    assert!(not_identity > 0, "the look-alike truth differs from identity on some pair");
}
