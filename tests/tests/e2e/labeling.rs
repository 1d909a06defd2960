//! Crowd labeling through the API, with the real 1-second rule: tasks under leases, three votes
//! from three annotators give a 2-of-3 label, too-fast votes (also on a task fetched ahead) and
//! foreign leases are refused,
//! retries count once, skipped pairs stay away, a disabled annotator's votes stop counting, gold
//! pairs score annotators, and a restart keeps every vote and label. A second test races many
//! annotators over few pairs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use facesim_client::crowd::ensure_instructions;
use facesim_client::{pb, Client};
use facesim_tests::{demo_pairs, TestServer};
use tonic::Code;

const SIMILAR: i32 = pb::VoteChoice::Similar as i32;
const DISSIMILAR: i32 = pb::VoteChoice::Dissimilar as i32;

async fn next(client: &Client) -> pb::Task {
    client.labeling().next_task(pb::NextTaskRequest::default()).await.unwrap().into_inner()
}

async fn vote(client: &Client, lease_id: u64, choice: i32) -> Result<bool, tonic::Status> {
    client.labeling().submit_vote(pb::SubmitVoteRequest { lease_id, choice }).await.map(|r| r.into_inner().recorded)
}

async fn pair(client: &Client, pair_id: u64) -> pb::Pair {
    client.proposals().get_pair(pb::GetPairRequest { pair_id }).await.unwrap().into_inner()
}

async fn annotators(server: &TestServer, names: &[&str]) -> Vec<Client> {
    let mut out = Vec::new();
    for name in names {
        out.push(server.client(Some(&server.user(name, pb::Role::Annotator).await)).await);
    }
    out
}

/// The 1-second rule is the time an annotator spends on a pair: it counts from the later of the
/// lease and the annotator's previous answer (vote or skip), so a task fetched ahead while another
/// was shown cannot be answered the moment the one before it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_fetched_ahead_waits_a_second_after_the_previous_answer() {
    let server = TestServer::start().await;
    let researcher = server.admin().await;
    demo_pairs(&researcher, 4, 4, 10).await;
    ensure_instructions(&researcher).await.unwrap();
    let [a]: [Client; 1] = annotators(&server, &["ahead"]).await.try_into().ok().unwrap();
    let (t1, t2) = (next(&a).await, next(&a).await);
    assert_ne!(t1.pair_id, t2.pair_id);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(vote(&a, t1.lease_id, SIMILAR).await.unwrap());
    // t2 was leased over a second ago, but the previous answer came just now.
    let err = vote(&a, t2.lease_id, SIMILAR).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("too fast"), "{}", err.message());
    // A skip is an answer too.
    let t3 = next(&a).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.labeling().skip(pb::SkipRequest { lease_id: t3.lease_id }).await.unwrap();
    let err = vote(&a, t2.lease_id, DISSIMILAR).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert!(vote(&a, t2.lease_id, DISSIMILAR).await.unwrap(), "a second after the skip");
    let me = a.labeling().my_stats(pb::MyStatsRequest {}).await.unwrap().into_inner();
    assert_eq!((me.votes, me.rejected_too_fast), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_annotators_label_a_pair_by_majority() {
    let server = TestServer::start_with(|c| c.gold_every = 3).await;
    let researcher = server.admin().await;
    let proposal = demo_pairs(&researcher, 4, 4, 10).await;
    let batch_id = proposal.batch_ids[0];
    let a_token = server.user("ann-a", pb::Role::Annotator).await;
    let a = server.client(Some(&a_token)).await;
    let [b, c, d]: [Client; 3] = annotators(&server, &["ann-b", "ann-c", "ann-d"]).await.try_into().ok().unwrap();

    // Instructions first: no task is handed out before they exist.
    let err = a.labeling().get_instructions(pb::GetInstructionsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    let err = a.labeling().next_task(pb::NextTaskRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().starts_with("no labeling instructions set"), "{}", err.message());
    // They need a similar and a dissimilar example; annotators see them with faces.
    let example = |x, y, why: &str| pb::ExampleRef { image_a: x, image_b: y, explanation: why.into() };
    let bad = pb::SetInstructionsRequest { text: "Do these two people look alike?".into(), ..Default::default() };
    let err = researcher.labeling().set_instructions(bad.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let good = pb::SetInstructionsRequest {
        similar_examples: vec![example(1, 2, "same face shape and features")],
        dissimilar_examples: vec![example(1, 20, "different in every feature")],
        ..bad
    };
    researcher.labeling().set_instructions(good).await.unwrap();
    let shown = a.labeling().get_instructions(pb::GetInstructionsRequest {}).await.unwrap().into_inner();
    assert_eq!((shown.similar_examples.len(), shown.dissimilar_examples.len(), shown.min_answer_millis), (1, 1, 1000));
    assert!(shown.similar_examples[0].face_a.starts_with(b"\xff\xd8\xff"), "a JPEG");

    // A takes the nearest pair; voting at once is too fast and the lease stays A's.
    let t1 = next(&a).await;
    assert!(!t1.done && t1.face_a.starts_with(b"\xff\xd8\xff") && t1.face_b.starts_with(b"\xff\xd8\xff"));
    assert_eq!((t1.pair_id, t1.batch_id, t1.remaining_in_batch), (1, batch_id, 4));
    let err = vote(&a, t1.lease_id, SIMILAR).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("too fast"), "{}", err.message());
    // A may prefetch one more task; asking again while holding two gives the first back.
    let t2 = next(&a).await;
    assert_ne!(t2.pair_id, t1.pair_id);
    assert_eq!(next(&a).await.lease_id, t1.lease_id);

    // B and C take pair 1 too; with A's lease that makes three, so D is given another pair.
    let (tb, tc, td) = (next(&b).await, next(&c).await, next(&d).await);
    assert_eq!((tb.pair_id, tc.pair_id), (1, 1));
    assert_ne!(td.pair_id, 1);
    let err = vote(&d, tb.lease_id, SIMILAR).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "a lease of another annotator");
    let err = vote(&a, t1.lease_id, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert!(vote(&a, t1.lease_id, SIMILAR).await.unwrap());
    assert!(!vote(&a, t1.lease_id, SIMILAR).await.unwrap(), "a retry counts once");
    assert_eq!(pair(&researcher, 1).await.votes, 1);
    assert!(vote(&b, tb.lease_id, DISSIMILAR).await.unwrap());
    assert!(vote(&c, tc.lease_id, SIMILAR).await.unwrap());
    let p1 = pair(&researcher, 1).await;
    assert_eq!((p1.state, p1.votes), (pb::PairState::Labeled as i32, 3));
    let labels = researcher.labeling().list_labels(pb::ListLabelsRequest::default()).await.unwrap().into_inner().labels;
    assert_eq!(labels.len(), 1);
    let l = &labels[0];
    assert_eq!((l.pair_id, l.majority, l.similar_votes, l.dissimilar_votes), (1, SIMILAR, 2, 1));
    assert_eq!((l.image_a, l.image_b, l.distance), (p1.image_a, p1.image_b, p1.distance));

    let me = a.labeling().my_stats(pb::MyStatsRequest {}).await.unwrap().into_inner();
    assert_eq!((me.votes, me.votes_today, me.rejected_too_fast, me.majority_agreement), (1, 1, 1, 1.0));
    assert!(me.median_answer_seconds >= 1.0, "{}", me.median_answer_seconds);
    let progress = researcher.labeling().get_batch_progress(pb::GetBatchProgressRequest { batch_id }).await;
    let progress = progress.unwrap().into_inner();
    assert_eq!(progress.pairs_by_votes, [3, 0, 0, 1]);
    assert_eq!((progress.labeled_similar, progress.labeled_dissimilar), (1, 0));
    assert_eq!(progress.active_leases, 2, "A's prefetched task and D's");
    let agreement = researcher.labeling().get_agreement(pb::GetAgreementRequest::default()).await.unwrap();
    assert_eq!(agreement.into_inner().complete_pairs, 1);

    // D skips its pair and is not offered it again.
    d.labeling().skip(pb::SkipRequest { lease_id: td.lease_id }).await.unwrap();
    assert_ne!(next(&d).await.pair_id, td.pair_id);

    // Gold: every third task of an annotator is a gold pair it has not answered.
    let gold = pb::GoldPair { image_a: 3, image_b: 4, answer: SIMILAR };
    let added = researcher.labeling().add_gold_pairs(pb::AddGoldPairsRequest { pairs: vec![gold] }).await.unwrap();
    let gold_id = added.into_inner().pair_ids[0];
    // B has had one task; its second is an ordinary one, its third the gold pair.
    let second = next(&b).await;
    assert_ne!(second.pair_id, gold_id);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    vote(&b, second.lease_id, DISSIMILAR).await.unwrap();
    let third = next(&b).await;
    assert_eq!(third.pair_id, gold_id);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert!(vote(&b, third.lease_id, SIMILAR).await.unwrap());
    let stats = researcher.labeling().list_annotator_stats(pb::ListAnnotatorStatsRequest::default()).await.unwrap();
    let stats: HashMap<String, pb::AnnotatorStats> =
        stats.into_inner().annotators.into_iter().map(|s| (s.name.clone(), s)).collect();
    assert_eq!(stats.len(), 4);
    assert_eq!((stats["ann-b"].gold_answered, stats["ann-b"].gold_accuracy, stats["ann-b"].votes), (1, 1.0, 2));
    assert_eq!(stats["ann-d"].skips, 1);
    assert_eq!(pair(&researcher, gold_id).await.votes, 0, "gold answers never count as votes");

    // Disabling C: its vote stops counting, pair 1 loses its label and needs a vote again.
    let c_id = stats["ann-c"].user_id;
    let request = pb::SetAnnotatorEnabledRequest { user_id: c_id, enabled: false };
    let c_stats = researcher.labeling().set_annotator_enabled(request).await.unwrap().into_inner();
    assert!(!c_stats.enabled);
    let p1 = pair(&researcher, 1).await;
    assert_eq!((p1.state, p1.votes), (pb::PairState::Pending as i32, 2));
    assert!(researcher
        .labeling()
        .list_labels(pb::ListLabelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .labels
        .is_empty());
    assert_eq!(
        c.labeling().next_task(pb::NextTaskRequest::default()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let votes = researcher.labeling().list_votes(pb::ListVotesRequest::default()).await.unwrap().into_inner().votes;
    let c_vote = votes.iter().find(|v| v.annotator_id == c_id).unwrap();
    assert!(!c_vote.counted);
    assert_eq!(votes.iter().filter(|v| v.gold).count(), 1);

    // A restart keeps votes and labels; old leases lapse, but a retried vote still counts once.
    let before = researcher.labeling().list_votes(pb::ListVotesRequest::default()).await.unwrap().into_inner().votes;
    let server = server.restart().await;
    let researcher = server.admin().await;
    let after = researcher.labeling().list_votes(pb::ListVotesRequest::default()).await.unwrap().into_inner().votes;
    assert_eq!(before, after);
    let a = server.client(Some(&a_token)).await;
    assert!(!vote(&a, t1.lease_id, SIMILAR).await.unwrap(), "the vote of this lease is on disk");
    let err = vote(&a, t2.lease_id, SIMILAR).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "leases lapse with a restart");
    assert_eq!(pair(&researcher, 1).await.votes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_annotators_never_over_vote_or_lose_votes() {
    // The race is about concurrency, not human pace: votes may follow hand-outs at once here.
    let server = TestServer::start_with(|c| c.min_answer_millis = 0).await;
    let researcher = server.admin().await;
    demo_pairs(&researcher, 3, 12, 500).await;
    ensure_instructions(&researcher).await.unwrap();
    let names: Vec<String> = (0..16).map(|i| format!("racer-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let crowd = annotators(&server, &refs).await;
    let mut tasks = Vec::new();
    for (i, client) in crowd.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            loop {
                let task = next(&client).await;
                if task.done {
                    return acknowledged;
                }
                let choice = if (task.pair_id + i as u64).is_multiple_of(3) { DISSIMILAR } else { SIMILAR };
                // Every other vote is sent twice at once, as a client retrying on a timeout would.
                let (first, second) = tokio::join!(vote(&client, task.lease_id, choice), async {
                    if i % 2 == 0 {
                        Some(vote(&client, task.lease_id, choice).await)
                    } else {
                        None
                    }
                });
                let recorded = [Some(first), second].into_iter().flatten().filter(|r| *r.as_ref().unwrap()).count();
                assert_eq!(recorded, 1, "exactly one of the duplicates records");
                acknowledged.push((task.pair_id, choice));
            }
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 36, "12 pairs x 3 votes, each acknowledged once");
    let mut votes = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = researcher
            .labeling()
            .list_votes(pb::ListVotesRequest { page_size: 10, page_token, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        votes.extend(page.votes);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(votes.len(), 36, "no lost and no extra vote");
    let mut by_pair: HashMap<u64, Vec<&pb::Vote>> = HashMap::new();
    for v in &votes {
        by_pair.entry(v.pair_id).or_default().push(v);
    }
    let labels = researcher.labeling().list_labels(pb::ListLabelsRequest::default()).await.unwrap().into_inner().labels;
    assert_eq!((by_pair.len(), labels.len()), (12, 12));
    for label in labels {
        let pair_votes = &by_pair[&label.pair_id];
        let voters: HashSet<u64> = pair_votes.iter().map(|v| v.annotator_id).collect();
        assert_eq!((pair_votes.len(), voters.len()), (3, 3), "three votes from three annotators");
        let similar = pair_votes.iter().filter(|v| v.choice == SIMILAR).count() as u32;
        assert_eq!((label.similar_votes, label.dissimilar_votes), (similar, 3 - similar));
        assert_eq!(label.majority, if similar >= 2 { SIMILAR } else { DISSIMILAR });
    }
}

/// Deleting an image withdraws its pending pairs from the labeling pool at once: the lease an
/// annotator holds on such a pair is gone, and asking for tasks until the batch is done never
/// meets a pair whose face no longer exists (before, each lease expiry handed the orphan out
/// again and `NextTask` answered NOT_FOUND).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_image_withdraws_its_pending_pairs_from_labeling() {
    let server = TestServer::start_with(|c| c.lease_seconds = 2).await;
    let researcher = server.admin().await;
    let proposal = demo_pairs(&researcher, 4, 5, 10).await;
    ensure_instructions(&researcher).await.unwrap();
    let batch_id = proposal.batch_ids[0];
    let [annotator]: [Client; 1] = annotators(&server, &["ann-del"]).await.try_into().ok().unwrap();

    let held = next(&annotator).await;
    let victim = pair(&researcher, held.pair_id).await.image_a;
    let deleted = researcher.datasets().delete_image(pb::DeleteImageRequest { image_id: victim }).await.unwrap();
    let removed = deleted.into_inner().pairs_removed;
    assert!(removed >= 1, "the held pair goes with its image");
    let err = vote(&annotator, held.lease_id, SIMILAR).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the lease on a withdrawn pair is gone: {}", err.message());

    // Let every lease expire, then label until the batch is done: no error, no withdrawn pair.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut voted = HashSet::new();
    for _ in 0..20 {
        let task = annotator.labeling().next_task(pb::NextTaskRequest { batch_id }).await;
        let task = task.unwrap_or_else(|e| panic!("NextTask failed after the deletion: {e:?}")).into_inner();
        if task.done {
            break;
        }
        let shown = pair(&researcher, task.pair_id).await;
        assert!(shown.image_a != victim && shown.image_b != victim, "pair {} shows the deleted image", task.pair_id);
        tokio::time::sleep(Duration::from_millis(1050)).await;
        assert!(vote(&annotator, task.lease_id, DISSIMILAR).await.unwrap());
        voted.insert(task.pair_id);
    }
    let progress = researcher.labeling().get_batch_progress(pb::GetBatchProgressRequest { batch_id }).await;
    let total: u64 = progress.unwrap().into_inner().pairs_by_votes.iter().sum();
    assert_eq!(voted.len() as u64, total, "every remaining pair of the batch was offered once");
    assert_eq!(total, 5 - u64::from(removed));
}
