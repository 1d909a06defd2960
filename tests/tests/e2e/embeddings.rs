//! The pretrained descriptor at work: imports start an embedding job that can be watched to
//! its end, and Embed / Compare answer for stored images, uploaded bytes and raw embeddings.

use facesim_client::pb;
use facesim_tests::{demo_subset, wait_for_job as wait_for, TestServer};
use tonic::Code;

fn face(id: u64) -> Option<pb::FaceInput> {
    Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(id)), ..Default::default() })
}

#[tokio::test]
async fn imports_are_embedded_by_a_watchable_job() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let report = client.import_files("demo", demo_subset(2), |_, _| {}).await.unwrap();
    assert_ne!(report.embedding_job_id, 0, "new images start an embedding job");
    let job = wait_for(&client, report.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    assert_eq!(job.kind, pb::JobKind::Embedding as i32);
    assert_eq!(job.model_id, "descriptor/v1");
    assert_eq!(job.device, "cpu");
    let progress = job.progress.unwrap();
    assert_eq!((progress.done, progress.total), (10, 10));

    // Listed, and final: cancelling it now is refused.
    let jobs = client.jobs().list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    assert!(jobs.iter().any(|j| j.id == job.id));
    let err = client.jobs().cancel_job(pb::CancelJobRequest { job_id: job.id }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = client.jobs().get_job(pb::GetJobRequest { job_id: 999 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Re-importing the same files needs no embedding work.
    let again = client.import_files("demo", demo_subset(2), |_, _| {}).await.unwrap();
    assert_eq!((again.duplicates, again.embedding_job_id), (10, 0));
}

#[tokio::test]
async fn embed_and_compare_faces() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let files = demo_subset(2);
    let report = client.import_files("demo", files.clone(), |_, _| {}).await.unwrap();
    let ids: Vec<u64> = report.results.iter().map(|r| r.image_id).collect();
    let service = server.client(Some(&server.user("svc", pb::Role::Service).await)).await;
    let mut ranking = service.ranking();

    // A stored image and the same file uploaded go through the same preprocessing.
    let stored =
        ranking.embed(pb::EmbedRequest { face: face(ids[0]), model_id: String::new() }).await.unwrap().into_inner();
    assert_eq!(stored.model_id, "descriptor/v1");
    let stored = stored.embedding.unwrap().values;
    assert_eq!(stored.len(), 128);
    let bytes = std::fs::read(&files[0].path).unwrap();
    let uploaded = ranking
        .embed(pb::EmbedRequest {
            face: Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageData(bytes)), ..Default::default() }),
            model_id: "descriptor/v1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .embedding
        .unwrap()
        .values;
    let diff = stored.iter().zip(&uploaded).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "{diff}");

    // Two photos of the first person versus photos of two people.
    let same = ranking
        .compare(pb::CompareRequest { a: face(ids[0]), b: face(ids[1]), model_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.metric, pb::DistanceMetric::Euclidean as i32);
    assert!(same.similar && same.score < same.threshold, "{same:?}");
    let by_embedding = ranking
        .compare(pb::CompareRequest {
            a: Some(pb::FaceInput {
                face: Some(pb::face_input::Face::Embedding(pb::Embedding { values: stored })),
                ..Default::default()
            }),
            b: face(ids[1]),
            model_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!((by_embedding.score - same.score).abs() < 1e-5);
    let mut cross = vec![];
    for &a in &ids[..5] {
        for &b in &ids[5..] {
            let r =
                ranking.compare(pb::CompareRequest { a: face(a), b: face(b), model_id: String::new() }).await.unwrap();
            cross.push(r.into_inner().score);
        }
    }
    let nearest_other = cross.iter().cloned().fold(f32::INFINITY, f32::min);
    assert!(nearest_other > same.score, "different people {nearest_other} vs same person {}", same.score);

    // Bad input gets precise statuses.
    let cases = [
        (pb::EmbedRequest { face: None, model_id: String::new() }, Code::InvalidArgument),
        (pb::EmbedRequest { face: face(0), model_id: String::new() }, Code::InvalidArgument),
        (pb::EmbedRequest { face: face(99_999), model_id: String::new() }, Code::NotFound),
        (pb::EmbedRequest { face: face(ids[0]), model_id: "gaml/7".into() }, Code::NotFound),
        (
            pb::EmbedRequest {
                face: Some(pb::FaceInput {
                    face: Some(pb::face_input::Face::ImageData(b"not an image".to_vec())),
                    ..Default::default()
                }),
                model_id: String::new(),
            },
            Code::InvalidArgument,
        ),
        (
            pb::EmbedRequest {
                face: Some(pb::FaceInput {
                    face: Some(pb::face_input::Face::Embedding(pb::Embedding { values: vec![1.0, 2.0, 3.0] })),
                    ..Default::default()
                }),
                model_id: String::new(),
            },
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in cases {
        let err = ranking.embed(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{request:?}: {}", err.message());
        assert!(!err.message().is_empty());
    }
}

#[tokio::test]
async fn a_restart_finishes_embeddings_left_undone() {
    let server = TestServer::start().await;
    let client = server.admin().await;
    let report = client.import_files("demo", demo_subset(6), |_, _| {}).await.unwrap();
    assert_eq!(report.imported, 30);
    // Stop at once: the running job is interrupted, not lost.
    drop(client);
    let server = server.restart().await;
    let client = server.admin().await;
    let first =
        client.jobs().get_job(pb::GetJobRequest { job_id: report.embedding_job_id }).await.unwrap().into_inner();
    assert!(
        first.state == pb::JobState::Interrupted as i32 || first.state == pb::JobState::Succeeded as i32,
        "{first:?}"
    );
    // Whatever was missing is embedded by a job started at boot; every image ends up embedded.
    let jobs = client.jobs().list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    if first.state == pb::JobState::Interrupted as i32 {
        let resumed = jobs.iter().find(|j| j.id != first.id).expect("a job started at boot");
        let ended = wait_for(&client, resumed.id).await;
        assert_eq!(ended.state, pb::JobState::Succeeded as i32);
        // A graceful stop records exact progress, so the new job covers exactly the rest.
        let (before, after) = (first.progress.unwrap(), ended.progress.unwrap());
        assert_eq!(before.done + after.total, 30, "{before:?} then {after:?}");
        assert_eq!(after.done, after.total);
    }
    let ids = client
        .datasets()
        .list_images(pb::ListImagesRequest { page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .images;
    let mut ranking = client.ranking();
    for image in ids {
        let e = ranking.embed(pb::EmbedRequest { face: face(image.id), model_id: String::new() }).await.unwrap();
        assert_eq!(e.into_inner().embedding.unwrap().values.len(), 128);
    }
}
