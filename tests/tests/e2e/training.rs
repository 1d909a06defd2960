//! Training through the API: crowd labels and LFW-style pair lists become GAML and CNN models,
//! each evaluated next to the descriptor on its test split, listed in the registry with what it
//! was trained on, activated, and kept across a restart; bad requests get precise statuses.

use std::collections::HashSet;
use std::time::Duration;

use facesim_client::crowd::{annotator_clients, ensure_instructions, run_crowd, CrowdConfig, Truth};
use facesim_client::{pb, Client};
use facesim_tests::{demo_pair_list, demo_pairs, import_demo, wait_for_job, TestServer};
use tonic::Code;

pub(crate) fn hyper(epochs: u32, batch_size: u32, seed: u64) -> Option<pb::Hyperparameters> {
    Some(pb::Hyperparameters {
        epochs: Some(epochs),
        batch_size: Some(batch_size),
        seed: Some(seed),
        ..Default::default()
    })
}

pub(crate) async fn train(client: &Client, request: pb::StartTrainingRequest) -> (pb::Job, Vec<pb::TrainingProgress>) {
    let job = client.training().start_training(request).await.expect("start training").into_inner();
    assert_eq!((job.kind, job.device.as_str()), (pb::JobKind::Training as i32, "cpu"));
    let mut events = client.jobs().watch_job(pb::WatchJobRequest { job_id: job.id }).await.unwrap().into_inner();
    let (mut last, mut epochs) = (None, Vec::new());
    while let Some(event) = events.message().await.unwrap() {
        if let Some(t) = event.training {
            if epochs.last().is_none_or(|e: &pb::TrainingProgress| e.epoch != t.epoch) {
                epochs.push(t);
            }
        }
        last = event.job;
    }
    let job = last.unwrap();
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    (job, epochs)
}

fn check_scores(s: &pb::ModelScores) {
    assert!((0.0..=1.0).contains(&s.roc_auc), "AUC {}", s.roc_auc);
    assert!((-1.0..=1.0).contains(&s.mcc), "MCC {}", s.mcc);
    assert!((0.0..=1.0).contains(&s.accuracy));
    let (first, last) = (s.roc.first().unwrap(), s.roc.last().unwrap());
    assert_eq!((first.false_positive_rate, first.true_positive_rate), (0.0, 0.0));
    assert_eq!((last.false_positive_rate, last.true_positive_rate), (1.0, 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowd_labels_train_a_gaml_model_that_is_registered_and_activated() {
    let server = TestServer::start_with(|c| c.min_answer_millis = 0).await;
    let researcher = server.admin().await;
    let proposal = demo_pairs(&researcher, 6, 60, 500).await;
    let pairs = researcher
        .proposals()
        .list_pairs(pb::ListPairsRequest { batch_id: proposal.batch_ids[0], page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .pairs;
    // The crowd calls the nearer half similar: both classes get labels.
    let mut distances: Vec<f32> = pairs.iter().map(|p| p.distance).collect();
    distances.sort_by(f32::total_cmp);
    let median = distances[distances.len() / 2];
    let crowd = annotator_clients(&researcher, "trainer", 3).await.unwrap();
    let config = CrowdConfig {
        truth: Truth::Distance(median),
        error_rate: 0.0,
        answer_time: Duration::ZERO,
        max_votes: None,
        deadline: None,
        batch_id: 0,
        seed: 1,
    };
    ensure_instructions(&researcher).await.unwrap();
    run_crowd(&researcher, crowd, config).await.unwrap();
    let request = pb::ListLabelsRequest { page_size: 1000, ..Default::default() };
    let labels = researcher.labeling().list_labels(request).await.unwrap().into_inner().labels;
    assert_eq!(labels.len(), 60);

    let request = pb::StartTrainingRequest {
        architecture: pb::Architecture::SiameseGaml as i32,
        data: Some(pb::start_training_request::Data::Labels(pb::LabelSource {
            batch_ids: proposal.batch_ids.clone(),
            ..Default::default()
        })),
        hyperparameters: hyper(4, 16, 11),
        name: "first gaml".into(),
        ..Default::default()
    };
    let (job, epochs) = train(&researcher, request).await;
    // Watching coalesces updates, so fast epochs may share an event; the last one always comes.
    let seen: Vec<u32> = epochs.iter().map(|e| e.epoch).collect();
    assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen.last() == Some(&4), "epoch events {seen:?}");
    assert!(epochs.iter().all(|e| e.epochs == 4 && e.train_loss.is_finite() && e.pairs_per_second > 0.0));
    let model_id = job.model_id.clone();
    assert!(model_id.starts_with("gaml/"), "{model_id}");

    let model = researcher.models().get_model(pb::GetModelRequest { model_id: model_id.clone() }).await;
    let model = model.unwrap().into_inner();
    assert_eq!((model.name.as_str(), model.architecture), ("first gaml", pb::Architecture::SiameseGaml as i32));
    assert_eq!(model.loss, pb::LossFunction::GeometryAware as i32, "GAML's default loss");
    assert_eq!((model.embedding_dim, model.training_job_id, model.label_count), (400, job.id, 60));
    assert_eq!(model.batch_ids, proposal.batch_ids);
    assert_eq!(model.optimizer, "adam");
    let h = model.hyperparameters.as_ref().unwrap();
    assert_eq!(
        (h.epochs, h.batch_size, h.seed, h.learning_rate, h.alpha, h.margin),
        (Some(4), Some(16), Some(11), Some(1e-4), Some(0.5), Some(0.55))
    );
    // The model records exactly which labels it used, split 8:1:1.
    let used: Vec<u64> = [&model.train_pair_ids, &model.validation_pair_ids, &model.test_pair_ids]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    assert_eq!((model.train_pair_ids.len(), model.validation_pair_ids.len(), model.test_pair_ids.len()), (48, 6, 6));
    let labelled: HashSet<u64> = labels.iter().map(|l| l.pair_id).collect();
    assert_eq!(used.iter().copied().collect::<HashSet<_>>(), labelled);
    assert_eq!(model.history.len(), 4);
    assert!((1..=4).contains(&model.best_epoch));
    let (scores, baseline) = (model.scores.as_ref().unwrap(), model.baseline.as_ref().unwrap());
    check_scores(scores);
    check_scores(baseline);
    assert_eq!(baseline.model_id, "descriptor/v1");
    // The crowd's rule is a descriptor distance cut, which the descriptor itself ranks perfectly.
    assert_eq!(baseline.roc_auc, 1.0);

    let evaluation = researcher
        .training()
        .get_evaluation(pb::GetEvaluationRequest { evaluation_id: model.evaluation_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (evaluation.model_id.as_str(), evaluation.test_pairs, evaluation.job_id),
        (model_id.as_str(), 6, job.id)
    );
    assert_eq!(evaluation.scores.as_ref().unwrap().roc_auc, scores.roc_auc);

    // The registry lists the descriptor first, then the model; activation moves "active".
    let listed = researcher.models().list_models(pb::ListModelsRequest::default()).await.unwrap().into_inner().models;
    assert_eq!(listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec!["descriptor/v1", model_id.as_str()]);
    assert_eq!(listed[0].state, pb::ModelState::Active as i32);
    // Every evaluation states its pairs by class and how sure its figures are.
    assert_eq!(scores.similar_pairs + scores.dissimilar_pairs, 6);
    assert!(scores.caveat.starts_with("too few"), "{}", scores.caveat);
    let ci = scores.roc_auc_ci.as_ref().expect("an interval");
    assert!(ci.low <= scores.roc_auc && scores.roc_auc <= ci.high, "{ci:?} vs {}", scores.roc_auc);

    // The guard: compared with the active descriptor on the model's 6 test pairs, nothing can be
    // concluded, so a plain activation is refused, with both AUCs in the message; forcing works,
    // and both decisions are in the model's history.
    let request = pb::CompareModelsRequest { candidate_model_id: model_id.clone(), ..Default::default() };
    let compared = researcher.models().compare_models(request).await.unwrap().into_inner();
    assert_eq!(compared.reference_model_id, "descriptor/v1");
    assert_eq!(compared.verdict, pb::ComparisonVerdict::TooFewPairs as i32, "{}", compared.summary);
    assert_eq!((compared.similar_pairs + compared.dissimilar_pairs, compared.reference_roc_auc), (6, 1.0));
    assert!(
        (compared.candidate_roc_auc - scores.roc_auc).abs() < 1e-6,
        "{} vs {}",
        compared.candidate_roc_auc,
        scores.roc_auc
    );
    let activate = |force| pb::ActivateModelRequest { model_id: model_id.clone(), force };
    let refused = researcher.models().activate_model(activate(false)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{}", refused.message());
    assert!(
        refused.message().contains("not activated") && refused.message().contains("descriptor/v1"),
        "{}",
        refused.message()
    );
    let active = researcher.models().get_active_model(pb::GetActiveModelRequest {}).await.unwrap().into_inner();
    assert_eq!(active.id, "descriptor/v1", "a refused model does not become active");
    let activated = researcher.models().activate_model(activate(true)).await.unwrap().into_inner();
    assert_eq!(activated.state, pb::ModelState::Active as i32);
    let decisions: Vec<(bool, bool)> = activated.activations.iter().map(|a| (a.refused, a.forced)).collect();
    assert_eq!(decisions, [(true, false), (false, true)]);
    assert_eq!(activated.activations[1].user, "admin");
    let service_token = server.user("svc", pb::Role::Service).await;
    let service = server.client(Some(&service_token)).await;
    let active = service.models().get_active_model(pb::GetActiveModelRequest {}).await.unwrap().into_inner();
    assert_eq!(active.id, model_id);

    // A restart keeps the model, its weights file, its evaluation and the activation.
    let server = server.restart().await;
    let researcher = server.admin().await;
    let active = researcher.models().get_active_model(pb::GetActiveModelRequest {}).await.unwrap().into_inner();
    assert_eq!((active.id.as_str(), active.history.len()), (model_id.as_str(), 4));
    assert!(server.data_dir().join("models/gaml-1/best.safetensors").is_file());
    assert!(server.data_dir().join("models/gaml-1/last.safetensors").is_file());

    // Evaluating the stored model again on its labels reloads its weights.
    let request = pb::StartEvaluationRequest {
        model_id: model_id.clone(),
        data: Some(pb::start_evaluation_request::Data::Labels(pb::LabelSource::default())),
    };
    let job = researcher.training().start_evaluation(request).await.unwrap().into_inner();
    let job = wait_for_job(&researcher, job.id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    let evaluations = researcher
        .training()
        .list_evaluations(pb::ListEvaluationsRequest { model_id: model_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .evaluations;
    assert_eq!(evaluations.len(), 2);
    assert_eq!(evaluations[1].test_pairs, 60);
    check_scores(evaluations[1].scores.as_ref().unwrap());

    // Deleting: never the descriptor, never the active model, never by an annotator.
    let delete = |id: &str| pb::DeleteModelRequest { model_id: id.into() };
    for (id, needle) in [(model_id.as_str(), "active model"), ("descriptor/v1", "built-in")] {
        let refused = researcher.models().delete_model(delete(id)).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{id}: {}", refused.message());
        assert!(refused.message().contains(needle), "{:?} lacks {needle:?}", refused.message());
    }
    let token = server.user("ann", pb::Role::Annotator).await;
    let annotator = server.client(Some(&token)).await;
    let denied = annotator.models().delete_model(delete(&model_id)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let missing = researcher.models().delete_model(delete("gaml/999")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let empty = researcher.models().delete_model(delete("")).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Once another model is active it goes, weights and all; its evaluations stay listed.
    let request = pb::ActivateModelRequest { model_id: "descriptor/v1".into(), force: true };
    researcher.models().activate_model(request).await.unwrap();
    // Until the descriptor's index is ready, ranking still answers with the model: not yet.
    let started = std::time::Instant::now();
    let deleted = loop {
        match researcher.models().delete_model(delete(&model_id)).await {
            Ok(deleted) => break deleted.into_inner(),
            Err(status) if status.code() == Code::FailedPrecondition && status.message().contains("still answers") => {
                assert!(started.elapsed() < Duration::from_secs(120), "the descriptor's index never came");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("delete: {status:?}"),
        }
    };
    assert_eq!(deleted.model.unwrap().id, model_id);
    assert!(!server.data_dir().join("models/gaml-1").exists(), "weights directory removed");
    let gone = researcher.models().get_model(pb::GetModelRequest { model_id: model_id.clone() }).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
    let pinned = pb::RankRequest {
        query: Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(1)), ..Default::default() }),
        k: 3,
        model_id: model_id.clone(),
        ..Default::default()
    };
    let ranked = researcher.ranking().rank(pinned).await.unwrap_err();
    assert_eq!(ranked.code(), Code::NotFound, "ranking with a deleted model: {}", ranked.message());
    let again = researcher.models().delete_model(delete(&model_id)).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let request = pb::ListEvaluationsRequest { model_id: model_id.clone(), ..Default::default() };
    let evaluations = researcher.training().list_evaluations(request).await.unwrap().into_inner().evaluations;
    assert_eq!(evaluations.len(), 2, "evaluations are the record of what was measured");

    // The deletion is durable.
    let server = server.restart().await;
    let researcher = server.admin().await;
    let listed = researcher.models().list_models(pb::ListModelsRequest::default()).await.unwrap().into_inner().models;
    assert_eq!(listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec!["descriptor/v1"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_lists_train_a_cnn_and_bad_requests_get_precise_statuses() {
    let server = TestServer::start().await;
    let researcher = server.admin().await;
    let report = import_demo(&researcher, 8).await;
    let job = wait_for_job(&researcher, report.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32);
    let pairs_text = demo_pair_list(8);
    let pair_list = |text: &str| {
        Some(pb::start_training_request::Data::PairList(pb::PairListSource {
            dataset: "demo".into(),
            pairs_text: text.into(),
        }))
    };

    let request = pb::StartTrainingRequest {
        architecture: pb::Architecture::SiameseCnn as i32,
        data: pair_list(&pairs_text),
        hyperparameters: hyper(1, 16, 5),
        device: "cpu".into(),
        ..Default::default()
    };
    let (job, epochs) = train(&researcher, request).await;
    assert_eq!(epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![1]);
    let model = researcher.models().get_model(pb::GetModelRequest { model_id: job.model_id.clone() }).await;
    let model = model.unwrap().into_inner();
    assert!(model.id.starts_with("cnn/"));
    assert_eq!((model.loss, model.optimizer.as_str()), (pb::LossFunction::Contrastive as i32, "sgd-momentum"));
    let h = model.hyperparameters.unwrap();
    assert_eq!(
        (h.learning_rate, h.momentum, h.margin),
        (Some(0.01), Some(0.9), Some(2.0)),
        "the method's CNN settings"
    );
    assert!(model.data_source.contains("pair list"), "{}", model.data_source);
    assert!(model.train_pair_ids.is_empty(), "pairs from a list have no labelled pair ids");
    check_scores(model.scores.as_ref().unwrap());

    // The descriptor evaluated on the same list.
    let request = pb::StartEvaluationRequest {
        model_id: "descriptor/v1".into(),
        data: Some(pb::start_evaluation_request::Data::PairList(pb::PairListSource {
            dataset: "demo".into(),
            pairs_text: pairs_text.clone(),
        })),
    };
    let job = researcher.training().start_evaluation(request).await.unwrap().into_inner();
    let job = wait_for_job(&researcher, job.id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    let all = researcher.training().list_evaluations(pb::ListEvaluationsRequest::default()).await.unwrap();
    let last = all.into_inner().evaluations.pop().unwrap();
    assert_eq!(last.model_id, "descriptor/v1");
    assert!(last.scores.unwrap().roc_auc > 0.9, "the descriptor tells demo identities apart");

    // A training job can be cancelled while it runs.
    let request = pb::StartTrainingRequest {
        architecture: pb::Architecture::SiameseGaml as i32,
        data: pair_list(&pairs_text),
        hyperparameters: hyper(100_000, 4, 1),
        ..Default::default()
    };
    let job = researcher.training().start_training(request).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    researcher.jobs().cancel_job(pb::CancelJobRequest { job_id: job.id }).await.unwrap();
    let ended = wait_for_job(&researcher, job.id).await;
    assert_eq!(ended.state, pb::JobState::Cancelled as i32, "{}", ended.message);
    let missing = researcher.models().get_model(pb::GetModelRequest { model_id: ended.model_id.clone() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound, "a cancelled run stores no model");

    let base = pb::StartTrainingRequest {
        architecture: pb::Architecture::SiameseGaml as i32,
        data: pair_list(&pairs_text),
        hyperparameters: hyper(1, 8, 1),
        ..Default::default()
    };
    let cases: Vec<(pb::StartTrainingRequest, Code, &str)> = vec![
        (pb::StartTrainingRequest { architecture: 0, ..base.clone() }, Code::InvalidArgument, "architecture"),
        (pb::StartTrainingRequest { architecture: 9, ..base.clone() }, Code::InvalidArgument, "architecture"),
        (pb::StartTrainingRequest { loss: 42, ..base.clone() }, Code::InvalidArgument, "loss"),
        (
            pb::StartTrainingRequest {
                architecture: pb::Architecture::SiameseCnn as i32,
                loss: pb::LossFunction::GeometryAware as i32,
                ..base.clone()
            },
            Code::InvalidArgument,
            "GAML",
        ),
        (pb::StartTrainingRequest { data: None, ..base.clone() }, Code::InvalidArgument, "data"),
        (pb::StartTrainingRequest { data: pair_list("A 1 B"), ..base.clone() }, Code::InvalidArgument, "line 1"),
        (
            pb::StartTrainingRequest {
                data: Some(pb::start_training_request::Data::PairList(pb::PairListSource {
                    dataset: "nope".into(),
                    pairs_text: pairs_text.clone(),
                })),
                ..base.clone()
            },
            Code::NotFound,
            "nope",
        ),
        (
            pb::StartTrainingRequest {
                data: Some(pb::start_training_request::Data::Labels(pb::LabelSource::default())),
                ..base.clone()
            },
            Code::FailedPrecondition,
            "at least",
        ),
        (
            pb::StartTrainingRequest {
                data: Some(pb::start_training_request::Data::Labels(pb::LabelSource {
                    batch_ids: vec![77],
                    ..Default::default()
                })),
                ..base.clone()
            },
            Code::NotFound,
            "batch",
        ),
        (pb::StartTrainingRequest { split: vec![8, 0, 2], ..base.clone() }, Code::InvalidArgument, "split"),
        (
            pb::StartTrainingRequest { hyperparameters: hyper(1, 1, 1), ..base.clone() },
            Code::InvalidArgument,
            "batch_size",
        ),
        (
            pb::StartTrainingRequest {
                hyperparameters: Some(pb::Hyperparameters { learning_rate: Some(f64::NAN), ..Default::default() }),
                ..base.clone()
            },
            Code::InvalidArgument,
            "learning_rate",
        ),
        (pb::StartTrainingRequest { device: "tpu".into(), ..base.clone() }, Code::InvalidArgument, "device"),
    ];
    for (request, code, needle) in cases {
        let status = researcher.training().start_training(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {}", status.message());
        assert!(status.message().contains(needle), "{:?} lacks {needle:?}", status.message());
    }
    let unknown = researcher
        .models()
        .activate_model(pb::ActivateModelRequest { model_id: "gaml/999".into(), force: false })
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
    let unknown = researcher.training().get_evaluation(pb::GetEvaluationRequest { evaluation_id: 999 }).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    // Annotators cannot train.
    let token = server.user("ann", pb::Role::Annotator).await;
    let annotator = server.client(Some(&token)).await;
    let denied = annotator.training().start_training(base).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    server.stop().await;
}
