//! Pair proposal through the API: the histogram covers every cross-identity pair, proposals
//! return exactly the nearest pairs a naive loop over the stored embeddings finds (in order),
//! never propose a pair twice, form batches that can be closed, survive a restart and lose
//! their pairs when an image is deleted.

use facesim_client::{pb, Client};
use facesim_tests::{import_demo, wait_for_job, TestServer};
use tonic::Code;

/// A cross-identity pair as the reference computes it: (distance, image a, image b).
type RefPair = (f32, u64, u64);

/// Every cross-identity pair of the stored images, nearest first, distances computed the naive
/// way from the embeddings the server serves.
async fn reference_pairs(client: &Client) -> Vec<RefPair> {
    let images = client
        .datasets()
        .list_images(pb::ListImagesRequest { page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .images;
    let mut embedded = Vec::new();
    for image in &images {
        let face = Some(pb::FaceInput { face: Some(pb::face_input::Face::ImageId(image.id)), ..Default::default() });
        let request = pb::EmbedRequest { face, model_id: String::new() };
        let values = client.ranking().embed(request).await.unwrap().into_inner().embedding.unwrap().values;
        embedded.push((image.id, image.identity_id, values));
    }
    let mut pairs = Vec::new();
    for (i, (a, ia, x)) in embedded.iter().enumerate() {
        for (b, ib, y) in &embedded[i + 1..] {
            if ia != ib {
                let squared: f32 = x.iter().zip(y).fold(0.0, |s, (p, q)| s + (p - q) * (p - q));
                pairs.push((squared.sqrt(), *a.min(b), *a.max(b)));
            }
        }
    }
    pairs.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)).then(p.2.cmp(&q.2)));
    pairs
}

async fn propose(client: &Client, request: pb::ProposePairsRequest) -> pb::Job {
    let job = client.proposals().propose_pairs(request).await.unwrap().into_inner();
    assert_eq!(job.kind, pb::JobKind::Proposal as i32);
    let job = wait_for_job(client, job.id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    job
}

/// The `n` nearest pairs in ranked order (nearest first), so pair ids follow the distances.
fn budget(n: u32, batch_size: u32) -> pb::ProposePairsRequest {
    pb::ProposePairsRequest {
        limit: Some(pb::propose_pairs_request::Limit::Budget(n)),
        batch_size,
        batch_order: pb::BatchOrder::Ranked as i32,
        ..Default::default()
    }
}

async fn all_pairs(client: &Client, batch_id: u64) -> Vec<pb::Pair> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListPairsRequest { batch_id, page_size: 7, page_token };
        let page = client.proposals().list_pairs(request).await.unwrap().into_inner();
        out.extend(page.pairs);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

fn as_ref(pairs: &[pb::Pair]) -> Vec<RefPair> {
    pairs.iter().map(|p| (p.distance, p.image_a, p.image_b)).collect()
}

#[tokio::test]
async fn proposals_are_the_exact_nearest_pairs_in_batches() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let report = import_demo(&admin, 8).await;
    let images = report.results.len();
    assert_eq!(wait_for_job(&admin, report.embedding_job_id).await.state, pb::JobState::Succeeded as i32);
    let researcher = server.client(Some(&server.user("rita", pb::Role::Researcher).await)).await;
    let reference = reference_pairs(&researcher).await;
    assert!(images >= 40 && reference.len() > 600, "{images} images, {} pairs", reference.len());

    // The histogram counts every cross-identity pair once; the mark's coverage matches.
    let mark = reference[99].0;
    let request = pb::GetDistanceHistogramRequest { selection: None, bins: 20, mark_distance: mark };
    let h = researcher.proposals().get_distance_histogram(request).await.unwrap().into_inner();
    assert_eq!((h.model_id.as_str(), h.counts.len()), ("descriptor/v1", 20));
    assert_eq!(h.total_pairs as usize, reference.len());
    assert_eq!(h.counts.iter().sum::<u64>(), h.total_pairs);
    assert!(
        (h.min_distance - reference[0].0).abs() < 1e-4 && (h.max_distance - reference.last().unwrap().0).abs() < 1e-4
    );
    assert!((99..=101).contains(&h.pairs_within_mark), "{} pairs within the 100th distance", h.pairs_within_mark);

    // Budget: the 30 nearest pairs, nearest first, in batches of 8.
    let first = propose(&researcher, pb::ProposePairsRequest { note: "round 1".into(), ..budget(30, 8) }).await;
    assert_eq!(first.batch_ids.len(), 4);
    assert_eq!(first.metrics["pairs"], 30.0);
    let pairs = all_pairs(&researcher, 0).await;
    assert_eq!(as_ref(&pairs), reference[..30]);
    assert!(pairs.windows(2).all(|w| w[0].id < w[1].id));
    assert!(pairs.iter().all(|p| p.identity_a != p.identity_b && p.state == pb::PairState::Pending as i32));
    let sizes: Vec<u32> = {
        let mut v = vec![];
        for &batch_id in &first.batch_ids {
            let b = researcher.proposals().get_batch(pb::GetBatchRequest { batch_id }).await.unwrap().into_inner();
            assert_eq!(
                (b.state, b.note.as_str(), b.proposal_job_id),
                (pb::BatchState::Open as i32, "round 1", first.id)
            );
            assert_eq!(all_pairs(&researcher, batch_id).await.len() as u32, b.pair_count);
            v.push(b.pair_count);
        }
        v
    };
    assert_eq!(sizes, [8, 8, 8, 6]);

    // Again: pairs proposed before are left out, so the next 10 come.
    propose(&researcher, budget(10, 500)).await;
    assert_eq!(as_ref(&all_pairs(&researcher, 0).await), reference[..40]);
    for &batch_id in &first.batch_ids {
        let b = researcher.proposals().get_batch(pb::GetBatchRequest { batch_id }).await.unwrap().into_inner();
        assert_eq!(b.shuffle_seed, None, "ranked batches record no seed");
    }

    // Threshold: every further pair within the 46th distance.
    let threshold = pb::ProposePairsRequest {
        limit: Some(pb::propose_pairs_request::Limit::MaxDistance(reference[45].0)),
        batch_order: pb::BatchOrder::Ranked as i32,
        ..Default::default()
    };
    let third = propose(&researcher, threshold).await;
    let within = reference.iter().take_while(|p| p.0 <= reference[45].0).count();
    assert_eq!(third.metrics["pairs"] as usize, within - 40);
    assert_eq!(as_ref(&all_pairs(&researcher, 0).await), reference[..within]);

    // At most one pair per image: greedy over the remaining pairs in distance order.
    let taken: std::collections::HashSet<(u64, u64)> = reference[..within].iter().map(|p| (p.1, p.2)).collect();
    let mut used = std::collections::HashSet::new();
    let expected: Vec<RefPair> = reference[within..]
        .iter()
        .filter(|p| !taken.contains(&(p.1, p.2)))
        .filter(|p| {
            let free = !used.contains(&p.1) && !used.contains(&p.2);
            if free {
                used.extend([p.1, p.2]);
            }
            free
        })
        .take(5)
        .copied()
        .collect();
    let capped = propose(&researcher, pb::ProposePairsRequest { max_pairs_per_image: 1, ..budget(5, 500) }).await;
    let batch = all_pairs(&researcher, capped.batch_ids[0]).await;
    assert_eq!(as_ref(&batch), expected);

    // Closing a batch, and a restart keeps every pair and batch as it was.
    let closed = pb::SetBatchStateRequest { batch_id: first.batch_ids[1], state: pb::BatchState::Closed as i32 };
    let b = researcher.proposals().set_batch_state(closed).await.unwrap().into_inner();
    assert_eq!(b.state, pb::BatchState::Closed as i32);
    let before = all_pairs(&researcher, 0).await;
    let server = server.restart().await;
    let researcher = server.client(Some(&server.user("rita2", pb::Role::Researcher).await)).await;
    assert_eq!(all_pairs(&researcher, 0).await, before);
    let batches =
        researcher.proposals().list_batches(pb::ListBatchesRequest::default()).await.unwrap().into_inner().batches;
    assert_eq!(batches.len(), 7);
    assert_eq!(batches[1].state, pb::BatchState::Closed as i32);

    // Deleting an image removes its pairs and shrinks their batches.
    let victim = before[0].image_a;
    let gone: Vec<&pb::Pair> = before.iter().filter(|p| p.image_a == victim || p.image_b == victim).collect();
    let deleted =
        researcher.datasets().delete_image(pb::DeleteImageRequest { image_id: victim }).await.unwrap().into_inner();
    assert_eq!(deleted.pairs_removed as usize, gone.len());
    let after = all_pairs(&researcher, 0).await;
    assert_eq!(after.len(), before.len() - gone.len());
    assert!(after.iter().all(|p| p.image_a != victim && p.image_b != victim));
    let b = researcher.proposals().get_batch(pb::GetBatchRequest { batch_id: first.batch_ids[0] }).await.unwrap();
    let in_first_batch = gone.iter().filter(|p| p.batch_id == first.batch_ids[0]).count() as u32;
    assert_eq!(b.into_inner().pair_count, 8 - in_first_batch);
    let err = researcher.proposals().get_pair(pb::GetPairRequest { pair_id: gone[0].id }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// By default the chosen pairs are dealt into batches at random (a seeded shuffle recorded on the
/// batches), as the method assigned pairs to batches: the same nearest pairs, but batch 1 (and the
/// order tasks are handed out in, which follows pair ids) is not the nearest few. The same seed
/// on the same pairs deals them the same way.
#[tokio::test]
async fn proposals_deal_their_pairs_into_batches_at_random_by_default() {
    let mut dealt = Vec::new();
    for _ in 0..2 {
        let server = TestServer::start().await;
        let admin = server.admin().await;
        let report = import_demo(&admin, 8).await;
        assert_eq!(wait_for_job(&admin, report.embedding_job_id).await.state, pb::JobState::Succeeded as i32);
        let reference = reference_pairs(&admin).await;
        let request = pb::ProposePairsRequest {
            limit: Some(pb::propose_pairs_request::Limit::Budget(60)),
            batch_size: 20,
            shuffle_seed: Some(42),
            ..Default::default()
        };
        let job = propose(&admin, request).await;
        assert!(job.message.contains("dealt into batches at random (shuffle seed 42)"), "{}", job.message);
        let pairs = all_pairs(&admin, 0).await;
        let mut by_distance = as_ref(&pairs);
        by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(by_distance, reference[..60], "the same 60 nearest pairs");
        assert!(pairs.windows(2).any(|w| w[0].distance > w[1].distance), "pair ids do not follow the distances");
        let first_batch: Vec<f32> =
            pairs.iter().filter(|p| p.batch_id == job.batch_ids[0]).map(|p| p.distance).collect();
        assert_eq!(first_batch.len(), 20);
        assert!(first_batch.iter().any(|&d| d > reference[19].0), "batch 1 is not the 20 nearest pairs");
        for &batch_id in &job.batch_ids {
            let b = admin.proposals().get_batch(pb::GetBatchRequest { batch_id }).await.unwrap().into_inner();
            assert_eq!(b.shuffle_seed, Some(42));
        }
        dealt.push(pairs.iter().map(|p| (p.image_a, p.image_b, p.batch_id)).collect::<Vec<_>>());
    }
    assert_eq!(dealt[0], dealt[1], "a seed deals the same pairs the same way");
}

#[tokio::test]
async fn bad_proposals_get_precise_errors() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let mut proposals = admin.proposals();

    // Nothing imported yet.
    let err = proposals.propose_pairs(budget(5, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("no images"), "{}", err.message());

    let report = import_demo(&admin, 2).await;
    wait_for_job(&admin, report.embedding_job_id).await;
    let cases = [
        (pb::ProposePairsRequest::default(), Code::InvalidArgument, "either max_distance"),
        (budget(0, 0), Code::InvalidArgument, "budget must be at least 1"),
        (budget(5, 20_000), Code::InvalidArgument, "batch_size"),
        (budget(5_000_000, 0), Code::InvalidArgument, "limit of 1000000"),
        (
            pb::ProposePairsRequest {
                limit: Some(pb::propose_pairs_request::Limit::MaxDistance(-1.0)),
                ..Default::default()
            },
            Code::InvalidArgument,
            "max_distance",
        ),
        (
            pb::ProposePairsRequest {
                selection: Some(pb::PairSelection { model_id: "cnn/9".into(), ..Default::default() }),
                ..budget(5, 0)
            },
            Code::NotFound,
            "no model \"cnn/9\"",
        ),
        (
            pb::ProposePairsRequest {
                selection: Some(pb::PairSelection { datasets: vec!["nope".into()], ..Default::default() }),
                ..budget(5, 0)
            },
            Code::FailedPrecondition,
            "in dataset(s) nope",
        ),
        (
            pb::ProposePairsRequest {
                order: pb::ProposalOrder::Uncertain as i32,
                limit: Some(pb::propose_pairs_request::Limit::MaxDistance(0.5)),
                ..Default::default()
            },
            Code::InvalidArgument,
            "UNCERTAIN needs a budget",
        ),
        (pb::ProposePairsRequest { order: 9, ..budget(5, 0) }, Code::InvalidArgument, "order"),
        (pb::ProposePairsRequest { batch_order: 7, ..budget(5, 0) }, Code::InvalidArgument, "batch order"),
        (
            pb::ProposePairsRequest { shuffle_seed: Some(3), ..budget(5, 0) },
            Code::InvalidArgument,
            "shuffle_seed is for batch_order RANDOM",
        ),
    ];
    for (request, code, words) in cases {
        let err = proposals.propose_pairs(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{request:?}: {}", err.message());
        assert!(err.message().contains(words), "{request:?}: {}", err.message());
    }
    let request = pb::GetDistanceHistogramRequest { bins: 5000, ..Default::default() };
    assert_eq!(proposals.get_distance_histogram(request).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(proposals.get_batch(pb::GetBatchRequest { batch_id: 9 }).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        proposals.get_batch(pb::GetBatchRequest { batch_id: 0 }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let err = proposals.list_pairs(pb::ListPairsRequest { batch_id: 9, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A threshold above every distance takes every cross-identity pair: 5 x 5 of two people.
    let job = proposals
        .propose_pairs(pb::ProposePairsRequest {
            limit: Some(pb::propose_pairs_request::Limit::MaxDistance(100.0)),
            batch_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let job = wait_for_job(&admin, job.id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    assert_eq!((job.metrics["pairs"], job.batch_ids.len()), (25.0, 25));
    let first = job.batch_ids[0];
    let request = pb::SetBatchStateRequest { batch_id: first, state: 0 };
    assert_eq!(proposals.set_batch_state(request).await.unwrap_err().code(), Code::InvalidArgument);
}
