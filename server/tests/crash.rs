//! `kill -9` at random moments of an import, a training job and a model activation, then a
//! restart on the same data dir: what was acknowledged is there, stored data is whole, a
//! training job resumes from its last checkpoint and ends as if never stopped, other jobs are
//! resumed or marked interrupted, and the active model serves. (Votes under
//! load: `kill9.rs`.) Kill points are drawn from a seed printed by each test; set
//! `FACESIM_KILL_SEED` to replay one.

use std::collections::HashMap;
use std::time::Duration;

use facesim_proto::v1::{
    self as pb, dataset_service_client::DatasetServiceClient, job_service_client::JobServiceClient,
    model_service_client::ModelServiceClient, ranking_service_client::RankingServiceClient,
    training_service_client::TrainingServiceClient,
};
use facesim_tests::demo_pair_list_of;
use facesim_tests::process::*;
use rand::Rng;

async fn import(
    url: String,
    messages: Vec<pb::ImportImagesRequest>,
) -> Result<pb::ImportImagesResponse, tonic::Status> {
    let mut client = DatasetServiceClient::connect(url).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client.import_images(admin(futures::stream::iter(messages))).await.map(|r| r.into_inner())
}

async fn all_images(url: &str) -> Vec<pb::Image> {
    let mut client = DatasetServiceClient::connect(url.to_string()).await.unwrap();
    let request = pb::ListImagesRequest { page_size: 1000, ..Default::default() };
    client.list_images(admin(request)).await.unwrap().into_inner().images
}

async fn jobs_of(url: &str, kind: pb::JobKind) -> Vec<pb::Job> {
    let mut client = JobServiceClient::connect(url.to_string()).await.unwrap();
    let request = pb::ListJobsRequest { page_size: 1000, ..Default::default() };
    let jobs = client.list_jobs(admin(request)).await.unwrap().into_inner().jobs;
    jobs.into_iter().filter(|j| j.kind == kind as i32).collect()
}

/// Waits until no job is queued or running any more.
async fn jobs_settled(url: &str) {
    let mut client = JobServiceClient::connect(url.to_string()).await.unwrap();
    for _ in 0..2400 {
        let request = pb::ListJobsRequest { page_size: 1000, ..Default::default() };
        let jobs = client.list_jobs(admin(request)).await.unwrap().into_inner().jobs;
        if jobs.iter().all(|j| j.state != pb::JobState::Running as i32 && j.state != pb::JobState::Queued as i32) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("jobs still running after 2 minutes");
}

/// Ranks around `image_id` with the active model, retrying while the ranking index is being
/// (re)built; returns the answer once it has at least `want` results.
async fn rank_when_ready(url: &str, image_id: u64, want: usize) -> pb::RankResponse {
    let mut client = RankingServiceClient::connect(url.to_string()).await.unwrap();
    let mut last = String::new();
    for _ in 0..1200 {
        let request = pb::RankRequest {
            query: Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(image_id)), ..Default::default() }),
            k: 1000,
            ..Default::default()
        };
        match client.rank(admin(request)).await {
            Ok(response) if response.get_ref().results.len() >= want => return response.into_inner(),
            Ok(response) => last = format!("{} results", response.get_ref().results.len()),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "only 'not ready yet' is acceptable: {status:?}");
                last = status.message().to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ranking did not answer with {want} results within 2 minutes (last: {last})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_killed_midstream_keep_every_acknowledged_file_whole() {
    let mut rng = kill_points("import");
    let dir = tempfile::tempdir().unwrap();
    let people = demo_people(30);
    let (mut server, mut url) = start(dir.path(), true);
    // file name → image id, for every file whose import was acknowledged.
    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    let mut sent: Vec<pb::ImportImagesRequest> = Vec::new();
    for round in 0..3 {
        let small = person_messages(&people[round * 10]);
        sent.extend(small.clone());
        let report = import(url.clone(), small).await.expect("an import while nothing is killed");
        for r in &report.results {
            acknowledged.insert(r.file_name.clone(), r.image_id);
        }
        // Nine people in one stream, killed part-way through.
        let big: Vec<_> = people[round * 10 + 1..round * 10 + 10].iter().flat_map(|p| person_messages(p)).collect();
        sent.extend(big.clone());
        let load = tokio::spawn(import(url.clone(), big));
        let kill_after = rng.random_range(10..600);
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        server.kill9();
        if let Ok(report) = load.await.unwrap() {
            eprintln!("round {round}: the big import finished before the kill at {kill_after} ms");
            for r in &report.results {
                acknowledged.insert(r.file_name.clone(), r.image_id);
            }
        }
        (server, url) = start(dir.path(), true);

        // Everything acknowledged is there under the same id, and every stored image is whole:
        // its original bytes are what was sent and its face crop decodes.
        let stored = all_images(&url).await;
        let by_name: HashMap<&str, &pb::Image> = stored.iter().map(|i| (i.file_name.as_str(), i)).collect();
        for (name, id) in &acknowledged {
            let image = by_name.get(name.as_str()).unwrap_or_else(|| panic!("round {round}: acknowledged {name} lost"));
            assert_eq!(image.id, *id, "{name}");
        }
        let mut datasets = DatasetServiceClient::connect(url.clone()).await.unwrap();
        for image in &stored {
            let original = pb::GetImageDataRequest { image_id: image.id, variant: pb::ImageVariant::Original as i32 };
            let data = datasets.get_image_data(admin(original)).await.unwrap().into_inner().data;
            let source = sent.iter().find(|m| m.file_name == image.file_name).unwrap();
            assert_eq!(data, source.data, "{} is stored whole", image.file_name);
            let face = pb::GetImageDataRequest { image_id: image.id, variant: pb::ImageVariant::Face as i32 };
            let face = datasets.get_image_data(admin(face)).await.unwrap().into_inner().data;
            assert!(image::load_from_memory(&face).is_ok(), "{}'s face crop decodes", image.file_name);
        }
    }

    // Sending everything again stores each file once: what the kills cut off is imported now,
    // the rest comes back as duplicates of the same ids.
    let report = import(url.clone(), sent.clone()).await.unwrap();
    assert_eq!(report.rejected, 0);
    assert_eq!((report.imported + report.duplicates) as usize, sent.len());
    for r in &report.results {
        if let Some(id) = acknowledged.get(&r.file_name) {
            assert_eq!((r.outcome, r.image_id), (pb::ImportOutcome::Duplicate as i32, *id), "{}", r.file_name);
        }
    }
    let stored = all_images(&url).await;
    assert_eq!(stored.len(), sent.len());

    // Embedding jobs cut by a kill were marked interrupted and their work was picked up again:
    // every image ends up in the descriptor's ranking gallery.
    jobs_settled(&url).await;
    let embedding_jobs = jobs_of(&url, pb::JobKind::Embedding).await;
    for job in &embedding_jobs {
        let ok = [pb::JobState::Succeeded, pb::JobState::Interrupted].map(|s| s as i32);
        assert!(ok.contains(&job.state), "embedding job {} ended {:?}: {}", job.id, job.state, job.message);
    }
    let ranked = rank_when_ready(&url, stored[0].id, stored.len() - 1).await;
    assert_eq!(ranked.model_id, "descriptor/v1");
    drop(server);
}

fn training_request(people: &[String], epochs: u32) -> pb::StartTrainingRequest {
    pb::StartTrainingRequest {
        architecture: pb::Architecture::SiameseGaml as i32,
        data: Some(pb::start_training_request::Data::PairList(pb::PairListSource {
            dataset: "demo".into(),
            pairs_text: demo_pair_list_of(people),
        })),
        hyperparameters: Some(pb::Hyperparameters {
            epochs: Some(epochs),
            batch_size: Some(16),
            seed: Some(3),
            ..Default::default()
        }),
        device: "cpu".into(),
        ..Default::default()
    }
}

/// A server with the demo faces of `people` imported and embedded.
async fn server_with_faces(dir: &std::path::Path, people: &[String]) -> (Server, String) {
    let (server, url) = start(dir, true);
    let messages: Vec<_> = people.iter().flat_map(|p| person_messages(p)).collect();
    let report = import(url.clone(), messages).await.unwrap();
    assert_eq!(finished_job(&url, report.embedding_job_id).await.state, pb::JobState::Succeeded as i32);
    (server, url)
}

async fn start_training(url: &str, request: pb::StartTrainingRequest) -> pb::Job {
    let mut training = TrainingServiceClient::connect(url.to_string()).await.unwrap();
    training.start_training(admin(request)).await.unwrap().into_inner()
}

async fn models(url: &str) -> Vec<pb::Model> {
    let mut client = ModelServiceClient::connect(url.to_string()).await.unwrap();
    client.list_models(admin(pb::ListModelsRequest::default())).await.unwrap().into_inner().models
}

async fn active_model(url: &str) -> pb::Model {
    let mut client = ModelServiceClient::connect(url.to_string()).await.unwrap();
    client.get_active_model(admin(pb::GetActiveModelRequest {})).await.unwrap().into_inner()
}

async fn model(url: &str, model_id: &str) -> pb::Model {
    let mut client = ModelServiceClient::connect(url.to_string()).await.unwrap();
    let request = pb::GetModelRequest { model_id: model_id.to_string() };
    client.get_model(admin(request)).await.unwrap().into_inner()
}

async fn job(url: &str, job_id: u64) -> pb::Job {
    let mut jobs = JobServiceClient::connect(url.to_string()).await.unwrap();
    jobs.get_job(admin(pb::GetJobRequest { job_id })).await.unwrap().into_inner()
}

/// Checkpoints after every epoch, so a kill after epoch k resumes after epoch k.
const EVERY_EPOCH: &[&str] = &["--checkpoint-seconds", "0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_killed_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_run() {
    const EPOCHS: u32 = 30;
    let mut rng = kill_points("training");
    let dir = tempfile::tempdir().unwrap();
    let people = demo_people(8);
    let (server, _) = server_with_faces(dir.path(), &people).await;
    drop(server);
    let (mut server, mut url) = start_with(dir.path(), true, EVERY_EPOCH);

    // The same run, never interrupted: what the resumed one must end as.
    let reference = finished_job(&url, start_training(&url, training_request(&people, EPOCHS)).await.id).await;
    assert_eq!(reference.state, pb::JobState::Succeeded as i32, "{}", reference.message);
    let reference = model(&url, &reference.model_id).await;

    let started = start_training(&url, training_request(&people, EPOCHS)).await;
    let mut resumed_after = Vec::new();
    // Two kill -9 and one graceful stop, each at a random moment after an epoch was saved.
    for round in 0..3 {
        // Until the job has saved an epoch past the one it last resumed after.
        let saved_before = resumed_after.last().copied().unwrap_or(0);
        loop {
            let now = job(&url, started.id).await;
            if now.state != pb::JobState::Running as i32
                || now.progress.is_some_and(|p| p.done > u64::from(saved_before))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
        if round == 2 {
            server.terminate();
        } else {
            server.kill9();
        }
        (server, url) = start_with(dir.path(), true, EVERY_EPOCH);
        let after = job(&url, started.id).await;
        if after.state == pb::JobState::Succeeded as i32 {
            break; // the stop came after the end
        }
        assert_eq!(after.state, pb::JobState::Running as i32, "round {round}: {after:?}");
        assert!(after.message.starts_with("resumed "), "round {round}: {}", after.message);
        if let Some(epoch) = after.message.strip_prefix("resumed after epoch ") {
            resumed_after.push(epoch.split(' ').next().unwrap().parse::<u32>().unwrap());
        }
        assert!(
            models(&url).await.iter().all(|m| m.training_job_id != started.id),
            "round {round}: a model was registered before its job ended"
        );
    }
    let done = finished_job(&url, started.id).await;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{}", done.message);
    eprintln!("the job resumed after epochs {resumed_after:?}");
    assert!(!resumed_after.is_empty(), "no stop landed while the job ran");
    assert!(
        resumed_after.windows(2).all(|w| w[0] < w[1]),
        "each stop came after a later checkpoint: {resumed_after:?}"
    );

    // Epochs 1..=EPOCHS once each, with the uninterrupted run's figures: the weights, optimiser
    // state and batch order all came back.
    let resumed = model(&url, &done.model_id).await;
    let epochs: Vec<u32> = resumed.history.iter().map(|h| h.epoch).collect();
    assert_eq!(epochs, (1..=EPOCHS).collect::<Vec<_>>());
    for (a, b) in resumed.history.iter().zip(&reference.history) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * y.abs().max(1e-3);
        assert!(
            close(a.train_loss, b.train_loss) && close(a.validation_auc, b.validation_auc),
            "epoch {}: resumed {a:?}, uninterrupted {b:?}",
            a.epoch
        );
    }
    let (r, u) = (resumed.scores.unwrap(), reference.scores.unwrap());
    assert!((r.roc_auc - u.roc_auc).abs() < 1e-6, "test AUC {} vs {}", r.roc_auc, u.roc_auc);
    // Nothing of the checkpoints is left beside the kept weights.
    let folder = dir.path().join("models").join(done.model_id.replace('/', "-"));
    let mut files: Vec<String> =
        std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["best.safetensors", "last.safetensors"], "{}", folder.display());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_cancelled_by_its_user_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let people = demo_people(8);
    let (server, url) = server_with_faces(dir.path(), &people).await;
    let job = start_training(&url, training_request(&people, 100_000)).await;
    loop {
        if crate::job(&url, job.id).await.progress.is_some_and(|p| p.done > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut jobs = JobServiceClient::connect(url.clone()).await.unwrap();
    jobs.cancel_job(admin(pb::CancelJobRequest { job_id: job.id })).await.unwrap();
    let cancelled = finished_job(&url, job.id).await;
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32, "{cancelled:?}");
    drop(server);
    let (server, url) = start(dir.path(), true);
    let after = crate::job(&url, job.id).await;
    assert_eq!(after.state, pb::JobState::Cancelled as i32, "{after:?}");
    assert!(models(&url).await.iter().all(|m| m.training_job_id != job.id));
    let folder = dir.path().join("models").join(job.model_id.replace('/', "-"));
    let leftovers: Vec<String> = std::fs::read_dir(&folder)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!leftovers.iter().any(|n| n.starts_with("resume-") || n.starts_with("state-")), "{leftovers:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_killed_leaves_an_active_model_that_serves() {
    let mut rng = kill_points("activation");
    let dir = tempfile::tempdir().unwrap();
    let people = demo_people(8);
    let (mut server, mut url) = server_with_faces(dir.path(), &people).await;
    let job = start_training(&url, training_request(&people, 2)).await;
    let trained = finished_job(&url, job.id).await;
    assert_eq!(trained.state, pb::JobState::Succeeded as i32, "{}", trained.message);
    let first_image = all_images(&url).await[0].id;

    let mut previous = "descriptor/v1".to_string();
    for round in 0..4 {
        let target = if round % 2 == 0 { trained.model_id.clone() } else { "descriptor/v1".to_string() };
        let activation = {
            let (url, model_id) = (url.clone(), target.clone());
            tokio::spawn(async move {
                let mut client = ModelServiceClient::connect(url).await.ok()?;
                client.activate_model(admin(pb::ActivateModelRequest { model_id, force: true })).await.ok()
            })
        };
        // From before the call reaches the server to well into the new model's index build.
        let kill_after = rng.random_range(0..1500);
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        server.kill9();
        let acknowledged = activation.await.unwrap().is_some();
        (server, url) = start(dir.path(), true);

        let active = active_model(&url).await.id;
        if acknowledged {
            assert_eq!(active, target, "round {round}: an acknowledged activation was lost");
        } else {
            assert!(active == target || active == previous, "round {round}: active {active}");
        }
        let ranked = rank_when_ready(&url, first_image, 10).await;
        assert_eq!(ranked.model_id, active, "round {round}: ranking serves the active model");
        previous = active;
    }
    drop(server);
}
