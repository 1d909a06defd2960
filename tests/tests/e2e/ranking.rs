//! Ranking for services: top-k faces by stored id, uploaded bytes or embedding, with filters,
//! thresholds, grouping by identity, exact and approximate search and batches; activation of a
//! trained model swaps the index without a failed query; bad requests get precise statuses.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use facesim_client::{pb, Client};
use facesim_tests::{demo_pair_list, demo_subset, import_demo, wait_for_job, TestServer};
use tonic::Code;

use super::training::{hyper, train};

fn face(id: u64) -> Option<pb::FaceInput> {
    Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(id)), ..Default::default() })
}

fn query(id: u64, k: u32) -> pb::RankRequest {
    pb::RankRequest { query: face(id), k, ..Default::default() }
}

async fn rank(client: &Client, request: pb::RankRequest) -> pb::RankResponse {
    client.ranking().rank(request).await.expect("rank").into_inner()
}

/// Waits until unpinned ranking sees `images` gallery images (the indexer refreshes within a
/// second of a change).
async fn wait_for_gallery(client: &Client, probe: u64, images: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.ranking().rank(query(probe, 1000)).await {
            Ok(r) if r.get_ref().results.len() + 1 == images => return,
            Ok(_) => {}
            Err(e) => assert_eq!(e.code(), Code::Unavailable, "only 'still building' is expected: {e}"),
        }
        assert!(Instant::now() < deadline, "the gallery never reached {images} images");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The HNSW graph files in a model's graph directory.
fn saved_graphs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "usearch")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_rank_faces_with_filters_grouping_thresholds_and_both_search_modes() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let report = import_demo(&admin, 6).await;
    let job = wait_for_job(&admin, report.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    let ids: Vec<u64> = report.results.iter().map(|r| r.image_id).collect();
    let svc_token = server.user("svc", pb::Role::Service).await;
    let service = server.client(Some(&svc_token)).await;
    wait_for_gallery(&service, ids[0], ids.len()).await;

    // Every image's embedding and identity, to check the server's answers independently.
    let mut embedding = HashMap::new();
    let mut identity = HashMap::new();
    for &id in &ids {
        let e = service.ranking().embed(pb::EmbedRequest { face: face(id), model_id: String::new() }).await;
        embedding.insert(id, e.unwrap().into_inner().embedding.unwrap().values);
        let image = admin.datasets().get_image(pb::GetImageRequest { image_id: id }).await.unwrap().into_inner();
        identity.insert(id, image.identity_id);
    }
    let probe = ids[0];

    // Plain top-k: the query itself is left out, scores ascend, the same person comes first.
    let top = rank(&service, query(probe, 5)).await;
    assert_eq!((top.model_id.as_str(), top.metric), ("descriptor/v1", pb::DistanceMetric::Euclidean as i32));
    assert_eq!(top.mode, pb::SearchMode::Exact as i32);
    assert_eq!(top.results.len(), 5);
    assert!(top.results.iter().all(|r| r.image_id != probe));
    assert!(top.results.windows(2).all(|w| w[0].score <= w[1].score));
    assert_eq!(top.results[0].identity_id, identity[&probe], "a photo of the same person is nearest");
    assert!(!top.results[0].identity.is_empty());
    let mut expected: Vec<(f32, u64)> =
        ids.iter().filter(|&&id| id != probe).map(|id| (distance(&embedding[&probe], &embedding[id]), *id)).collect();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (r, (d, id)) in top.results.iter().zip(&expected) {
        assert_eq!(r.image_id, *id);
        assert!((r.score - d).abs() < 1e-4, "{} vs {d}", r.score);
    }

    // The same face uploaded, and as an embedding, finds the stored image itself first.
    let bytes = std::fs::read(&demo_subset(6)[0].path).unwrap();
    let uploaded = rank(
        &service,
        pb::RankRequest {
            query: Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageData(bytes)), ..Default::default() }),
            k: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(uploaded.results[0].image_id, probe);
    assert!(uploaded.results[0].score < 1e-3);
    let by_embedding = rank(
        &service,
        pb::RankRequest {
            query: Some(pb::FaceInput {
                face: Some(pb::face_input::Face::Embedding(pb::Embedding { values: embedding[&probe].clone() })),
                ..Default::default()
            }),
            k: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        by_embedding.results.iter().map(|r| r.image_id).collect::<Vec<_>>(),
        uploaded.results.iter().map(|r| r.image_id).collect::<Vec<_>>()
    );

    // Filters: not the query's identity; only some identities; a threshold.
    let others = rank(
        &service,
        pb::RankRequest {
            filter: Some(pb::RankFilter { exclude_query_identity: true, ..Default::default() }),
            ..query(probe, 100)
        },
    )
    .await;
    assert!(others.results.iter().all(|r| r.identity_id != identity[&probe]));
    assert_eq!(others.results.len(), ids.iter().filter(|id| identity[id] != identity[&probe]).count());
    let chosen = identity[&ids[ids.len() - 1]];
    let only = rank(
        &service,
        pb::RankRequest {
            filter: Some(pb::RankFilter { identity_ids: vec![chosen], ..Default::default() }),
            ..query(probe, 100)
        },
    )
    .await;
    assert!(!only.results.is_empty() && only.results.iter().all(|r| r.identity_id == chosen));
    let near = rank(&service, pb::RankRequest { score_threshold: Some(0.5), ..query(probe, 100) }).await;
    assert!(near.results.iter().all(|r| r.score <= 0.5));
    assert_eq!(near.results.len(), expected.iter().filter(|(d, _)| *d <= 0.5).count());

    // Cosine on request: similarities, descending.
    let cosine = rank(&service, pb::RankRequest { metric: pb::DistanceMetric::Cosine as i32, ..query(probe, 5) }).await;
    assert_eq!(cosine.metric, pb::DistanceMetric::Cosine as i32);
    assert!(cosine.results.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(cosine.results.iter().all(|r| r.score <= 1.0 + 1e-6));

    // Grouping: one row per identity, its score the mean over the identity's images.
    let grouped = rank(&service, pb::RankRequest { group_by_identity: true, ..query(probe, 10) }).await;
    let people: std::collections::HashSet<u64> = identity.values().copied().collect();
    assert_eq!(grouped.results.len(), people.len());
    assert!(grouped.results.windows(2).all(|w| w[0].score <= w[1].score));
    for row in &grouped.results {
        let members: Vec<u64> =
            ids.iter().copied().filter(|id| identity[id] == row.identity_id && *id != probe).collect();
        let mean =
            members.iter().map(|id| distance(&embedding[&probe], &embedding[id])).sum::<f32>() / members.len() as f32;
        assert_eq!(row.merged_images as usize, members.len());
        assert!((row.score - mean).abs() < 1e-4, "identity {}: {} vs {mean}", row.identity_id, row.score);
        assert_eq!(identity[&row.image_id], row.identity_id);
    }
    assert_eq!(grouped.results[0].identity_id, identity[&probe]);

    // Approximate search: the graph is built on first demand; meanwhile answers are exact and
    // say so. On a gallery this small the graph finds the exact answer.
    let approx_request = pb::RankRequest { mode: pb::SearchMode::Approximate as i32, ..query(probe, 5) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let approx = loop {
        let r = rank(&service, approx_request.clone()).await;
        if r.mode == pb::SearchMode::Approximate as i32 {
            break r;
        }
        assert_eq!(r.results, top.results, "exact answers while the graph is built");
        assert!(Instant::now() < deadline, "the HNSW graph was never built");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(approx.results, top.results);

    // The graph is saved in the data dir and read back after a restart instead of being built
    // again: the same file (same inode: a new save would have renamed a new file over it)
    // serves the same answers.
    let graphs = server.data_dir().join("hnsw").join("descriptor-v1");
    let saved = saved_graphs(&graphs);
    assert_eq!(saved.len(), 1, "one saved graph for the gallery: {saved:?}");
    let inode = std::fs::metadata(&saved[0]).expect("saved graph").ino();
    let server = server.restart().await;
    let admin = server.admin().await;
    let service = server.client(Some(&svc_token)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let reloaded = loop {
        match service.ranking().rank(approx_request.clone()).await {
            Ok(r) if r.get_ref().mode == pb::SearchMode::Approximate as i32 => break r.into_inner(),
            Ok(_) => {}
            Err(e) => assert_eq!(e.code(), Code::Unavailable, "only 'still building' is expected: {e}"),
        }
        assert!(Instant::now() < deadline, "no approximate answer after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reloaded.results, top.results);
    assert_eq!(saved_graphs(&graphs), saved);
    assert_eq!(std::fs::metadata(&saved[0]).expect("saved graph").ino(), inode, "loaded, not built again");

    // A batch answers each query as a single call would.
    let batch = service
        .ranking()
        .batch_rank(pb::BatchRankRequest { queries: vec![query(probe, 5), query(ids[7], 3)] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.responses.len(), 2);
    assert_eq!(batch.responses[0].results, top.results);
    assert_eq!(batch.responses[1].results, rank(&service, query(ids[7], 3)).await.results);

    // A second dataset, and the dataset filter.
    let extra = admin.import_files("extra", demo_subset(7).split_off(ids.len()), |_, _| {}).await.unwrap();
    let job = wait_for_job(&admin, extra.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    wait_for_gallery(&service, probe, ids.len() + extra.imported as usize).await;
    let extra_ids: Vec<u64> = extra.results.iter().map(|r| r.image_id).collect();
    let in_extra = rank(
        &service,
        pb::RankRequest {
            filter: Some(pb::RankFilter { datasets: vec!["extra".into()], ..Default::default() }),
            ..query(probe, 100)
        },
    )
    .await;
    let mut found: Vec<u64> = in_extra.results.iter().map(|r| r.image_id).collect();
    found.sort();
    assert_eq!(found, extra_ids);

    // A deleted image is never returned, also before the gallery is refreshed.
    let gone = top.results[0].image_id;
    admin.datasets().delete_image(pb::DeleteImageRequest { image_id: gone }).await.unwrap();
    let after = rank(&service, query(probe, 100)).await;
    assert!(after.results.iter().all(|r| r.image_id != gone));

    // Bad requests.
    let bad: Vec<(pb::RankRequest, Code, &str)> = vec![
        (pb::RankRequest { query: None, ..query(probe, 5) }, Code::InvalidArgument, "face"),
        (query(probe, 1001), Code::InvalidArgument, "k must be"),
        (query(99_999, 5), Code::NotFound, "99999"),
        (pb::RankRequest { model_id: "gaml/42".into(), ..query(probe, 5) }, Code::NotFound, "gaml/42"),
        (pb::RankRequest { mode: 9, ..query(probe, 5) }, Code::InvalidArgument, "mode"),
        (pb::RankRequest { metric: 7, ..query(probe, 5) }, Code::InvalidArgument, "metric"),
        (pb::RankRequest { score_threshold: Some(f32::NAN), ..query(probe, 5) }, Code::InvalidArgument, "finite"),
        (
            pb::RankRequest {
                filter: Some(pb::RankFilter { identity_ids: vec![12_345], ..Default::default() }),
                ..query(probe, 5)
            },
            Code::NotFound,
            "identity",
        ),
        (
            pb::RankRequest {
                filter: Some(pb::RankFilter { datasets: vec!["nope".into()], ..Default::default() }),
                ..query(probe, 5)
            },
            Code::NotFound,
            "nope",
        ),
        (
            pb::RankRequest {
                query: Some(pb::FaceInput {
                    face: Some(pb::face_input::Face::Embedding(pb::Embedding { values: vec![0.5; 128] })),
                    ..Default::default()
                }),
                filter: Some(pb::RankFilter { exclude_query_identity: true, ..Default::default() }),
                k: 5,
                ..Default::default()
            },
            Code::InvalidArgument,
            "image id",
        ),
        (
            pb::RankRequest {
                query: Some(pb::FaceInput {
                    face: Some(pb::face_input::Face::Embedding(pb::Embedding { values: vec![0.5; 3] })),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Code::InvalidArgument,
            "128",
        ),
    ];
    for (request, code, needle) in bad {
        let err = service.ranking().rank(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{request:?}: {}", err.message());
        assert!(err.message().contains(needle), "{:?} lacks {needle:?}", err.message());
    }
    let err = service.ranking().batch_rank(pb::BatchRankRequest { queries: vec![] }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = service
        .ranking()
        .batch_rank(pb::BatchRankRequest { queries: vec![query(probe, 5), query(99_999, 5)] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().starts_with("queries[1]"), "{}", err.message());

    // Annotators label; they don't rank.
    let annotator = server.client(Some(&server.user("ann", pb::Role::Annotator).await)).await;
    let err = annotator.ranking().rank(query(probe, 5)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activating_a_trained_model_swaps_the_index_without_a_failed_query() {
    let server = TestServer::start().await;
    let researcher = server.admin().await;
    let report = import_demo(&researcher, 8).await;
    let job = wait_for_job(&researcher, report.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32);
    let ids: Vec<u64> = report.results.iter().map(|r| r.image_id).collect();
    let service = server.client(Some(&server.user("svc", pb::Role::Service).await)).await;
    wait_for_gallery(&service, ids[0], ids.len()).await;

    let request = pb::StartTrainingRequest {
        architecture: pb::Architecture::SiameseGaml as i32,
        data: Some(pb::start_training_request::Data::PairList(pb::PairListSource {
            dataset: "demo".into(),
            pairs_text: demo_pair_list(8),
        })),
        hyperparameters: hyper(2, 8, 3),
        ..Default::default()
    };
    let (job, _) = train(&researcher, request).await;
    let model_id = job.model_id;
    let model = researcher.models().get_model(pb::GetModelRequest { model_id: model_id.clone() }).await.unwrap();
    let threshold = model.into_inner().threshold;

    // Pinned, the trained model answers before it is active (its index is built on demand).
    let pinned = rank(&service, pb::RankRequest { model_id: model_id.clone(), ..query(ids[0], 5) }).await;
    assert_eq!(pinned.model_id, model_id);
    assert_eq!(pinned.results.len(), 5);

    // Activation: queries keep succeeding, first from the descriptor, then from the model.
    researcher
        .models()
        .activate_model(pb::ActivateModelRequest { model_id: model_id.clone(), force: true })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let swapped = loop {
        let r = rank(&service, query(ids[0], 5)).await;
        assert_eq!(r.results.len(), 5);
        if r.model_id == model_id {
            break r;
        }
        assert_eq!(r.model_id, "descriptor/v1");
        assert!(Instant::now() < deadline, "the index never swapped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(swapped.results, pinned.results);
    assert_eq!(swapped.metric, pb::DistanceMetric::Euclidean as i32, "GAML ranks by Euclidean distance");

    // Embed, Compare and Rank agree under the active model; the descriptor stays pinnable.
    let embedded = service.ranking().embed(pb::EmbedRequest { face: face(ids[0]), model_id: String::new() }).await;
    let embedded = embedded.unwrap().into_inner();
    assert_eq!(
        (embedded.model_id.as_str(), embedded.embedding.as_ref().unwrap().values.len()),
        (model_id.as_str(), 400)
    );
    let norm: f32 = embedded.embedding.unwrap().values.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "GAML embeddings are unit length: {norm}");
    let best = &swapped.results[0];
    let compared = service
        .ranking()
        .compare(pb::CompareRequest { a: face(ids[0]), b: face(best.image_id), model_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(compared.model_id, model_id);
    assert!((compared.score - best.score).abs() < 1e-4);
    assert_eq!(compared.threshold, threshold);
    assert_eq!(compared.similar, best.score <= threshold);
    let descriptor = rank(&service, pb::RankRequest { model_id: "descriptor/v1".into(), ..query(ids[0], 5) }).await;
    assert_eq!(descriptor.model_id, "descriptor/v1");

    // After a restart the active model serves again, and ranking's health follows its index.
    let server = server.restart().await;
    let service = server.client(Some(&server.user("svc2", pb::Role::Service).await)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = service
            .health()
            .check(tonic_health::pb::HealthCheckRequest { service: "facesim.v1.RankingService".into() })
            .await
            .unwrap()
            .into_inner();
        if health.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "ranking never became SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = rank(&service, query(ids[0], 5)).await;
    assert_eq!((after.model_id.as_str(), &after.results), (model_id.as_str(), &swapped.results));
    server.stop().await;
}
