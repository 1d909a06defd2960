//! The real `facesim-server` binary: acknowledged imports and votes survive `kill -9`, and the
//! server keeps working when whoever reads its log goes away.

use facesim_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, dataset_service_client::DatasetServiceClient,
    labeling_service_client::LabelingServiceClient, proposal_service_client::ProposalServiceClient,
};
use facesim_tests::process::*;

#[tokio::test]
async fn acknowledged_import_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start(dir.path(), true);
    let mut client = DatasetServiceClient::connect(url.clone()).await.unwrap();
    let report = client.import_images(authed(futures::stream::iter(demo_messages()))).await.unwrap().into_inner();
    assert_eq!(report.imported, 5);
    let acknowledged: Vec<u64> = report.results.iter().map(|r| r.image_id).collect();

    // SIGKILL right after the acknowledgement: no graceful shutdown, no final flush.
    server.kill9();

    let (_server, url) = start(dir.path(), true);
    assert_eq!(image_ids(&url).await, acknowledged);
}

/// Regression: a failed log write used to panic the handler (tracing-subscriber reports write
/// errors with `eprintln!`, which panics on a closed stderr) and cancel the RPC.
#[tokio::test]
async fn serves_after_its_log_reader_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start(dir.path(), false);
    let mut client = DatasetServiceClient::connect(url.clone()).await.unwrap();
    let report = client.import_images(authed(futures::stream::iter(demo_messages()))).await.unwrap().into_inner();
    assert_eq!(report.imported, 5);
    assert_eq!(image_ids(&url).await.len(), 5);
}

/// Annotators voting as fast as the server lets them, until the server goes away. Returns every
/// acknowledged vote as (lease, pair, annotator token index, choice).
async fn vote_until_gone(url: String, tokens: Vec<String>) -> Vec<(u64, u64, usize, i32)> {
    let mut tasks = Vec::new();
    for (who, token) in tokens.into_iter().enumerate() {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let Ok(mut labeling) = LabelingServiceClient::connect(url).await else { return acknowledged };
            loop {
                let Ok(task) = labeling.next_task(authed_as(&token, pb::NextTaskRequest::default())).await else {
                    return acknowledged;
                };
                let task = task.into_inner();
                if task.done {
                    return acknowledged;
                }
                let choice = if (task.pair_id + who as u64).is_multiple_of(2) { 1 } else { 2 };
                let vote = pb::SubmitVoteRequest { lease_id: task.lease_id, choice };
                match labeling.submit_vote(authed_as(&token, vote)).await {
                    Ok(r) if r.get_ref().recorded => acknowledged.push((task.lease_id, task.pair_id, who, choice)),
                    Ok(_) => panic!("a fresh lease's vote was reported as a retry"),
                    Err(_) => return acknowledged,
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_votes_survive_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    // Votes may follow hand-outs at once: this is a load test of the vote path, not of human pace.
    let args = ["--min-answer-millis", "0"];
    let (mut server, mut url) = start_with(dir.path(), true, &args);
    let mut datasets = DatasetServiceClient::connect(url.clone()).await.unwrap();
    let mut messages = Vec::new();
    // 12 people, 5 images each: 1,650 cross-identity pairs, 4,950 votes, more than the rounds
    // below can cast before their kills at the server's ~5,000 votes/s.
    for person in [
        "Abdullah_Gul",
        "Adrien_Brody",
        "Ahmed_Chalabi",
        "Ai_Sugiyama",
        "Al_Gore",
        "Al_Sharpton",
        "Alan_Greenspan",
        "Alastair_Campbell",
        "Albert_Costa",
        "Alejandro_Toledo",
        "Ali_Naimi",
        "Allyson_Felix",
    ] {
        messages.extend(person_messages(person));
    }
    let report = datasets.import_images(authed(futures::stream::iter(messages))).await.unwrap().into_inner();
    assert_eq!(finished_job(&url, report.embedding_job_id).await.state, pb::JobState::Succeeded as i32);
    let mut proposals = ProposalServiceClient::connect(url.clone()).await.unwrap();
    let request =
        pb::ProposePairsRequest { limit: Some(pb::propose_pairs_request::Limit::Budget(1650)), ..Default::default() };
    let job = proposals.propose_pairs(authed(request)).await.unwrap().into_inner();
    assert_eq!(finished_job(&url, job.id).await.state, pb::JobState::Succeeded as i32);
    // Tasks are handed out once there are instructions.
    let ids: Vec<u64> = report.results.iter().map(|r| r.image_id).take(3).collect();
    let example = |a, b| pb::ExampleRef { image_a: a, image_b: b, explanation: "an example".into() };
    let instructions = pb::SetInstructionsRequest {
        text: "Do these two faces look alike?".into(),
        similar_examples: vec![example(ids[0], ids[1])],
        dissimilar_examples: vec![example(ids[0], ids[2])],
    };
    let mut labeling = LabelingServiceClient::connect(url.clone()).await.unwrap();
    labeling.set_instructions(authed(instructions)).await.unwrap();
    let mut admin = AdminServiceClient::connect(url.clone()).await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..12 {
        let request = pb::CreateUserRequest {
            name: format!("crowd-{i}"),
            role: pb::Role::Annotator as i32,
            token_ttl_seconds: 0,
        };
        tokens.push(admin.create_user(authed(request)).await.unwrap().into_inner().token);
    }

    // Three rounds of load, each ended by SIGKILL at a random moment.
    let mut rng = kill_points("votes");
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let kill_after_ms = rand::Rng::random_range(&mut rng, 60..450);
        let load = tokio::spawn(vote_until_gone(url.clone(), tokens.clone()));
        tokio::time::sleep(std::time::Duration::from_millis(kill_after_ms)).await;
        server.kill9();
        let got = load.await.unwrap();
        assert!(
            kill_after_ms < 150 || !got.is_empty(),
            "round {round}: no vote was acknowledged in {kill_after_ms} ms"
        );
        acknowledged.extend(got);
        let (restarted, new_url) = start_with(dir.path(), true, &args);
        (server, url) = (restarted, new_url);
    }

    // Every acknowledged vote is there; no pair has more than three votes or a repeated voter;
    // labels are the majority of the stored votes.
    let mut labeling = LabelingServiceClient::connect(url.clone()).await.unwrap();
    let mut proposals = ProposalServiceClient::connect(url.clone()).await.unwrap();
    let mut votes = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListVotesRequest { page_size: 1000, page_token, ..Default::default() };
        let page = labeling.list_votes(authed(request)).await.unwrap().into_inner();
        votes.extend(page.votes);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let stored: std::collections::HashMap<u64, &pb::Vote> = votes.iter().map(|v| (v.lease_id, v)).collect();
    for (lease, pair, _, choice) in &acknowledged {
        let vote = stored.get(lease).unwrap_or_else(|| panic!("acknowledged vote of lease {lease} is lost"));
        assert_eq!((vote.pair_id, vote.choice), (*pair, *choice));
    }
    let mut by_pair: std::collections::HashMap<u64, Vec<&pb::Vote>> = Default::default();
    for v in &votes {
        by_pair.entry(v.pair_id).or_default().push(v);
    }
    // Every page: longer rounds label more than one page's worth of pairs.
    let mut labels: std::collections::HashMap<u64, pb::Label> = Default::default();
    let mut page_token = String::new();
    loop {
        let request = pb::ListLabelsRequest { page_size: 1000, page_token, ..Default::default() };
        let page = labeling.list_labels(authed(request)).await.unwrap().into_inner();
        labels.extend(page.labels.into_iter().map(|l| (l.pair_id, l)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    for (pair_id, pair_votes) in &by_pair {
        let voters: std::collections::HashSet<u64> = pair_votes.iter().map(|v| v.annotator_id).collect();
        assert!(pair_votes.len() <= 3 && voters.len() == pair_votes.len(), "pair {pair_id}: {pair_votes:?}");
        let pair = proposals.get_pair(authed(pb::GetPairRequest { pair_id: *pair_id })).await.unwrap().into_inner();
        assert_eq!(pair.votes as usize, pair_votes.len(), "pair {pair_id}'s vote count");
        match labels.get(pair_id) {
            Some(label) => {
                let similar = pair_votes.iter().filter(|v| v.choice == 1).count() as u32;
                assert_eq!(pair_votes.len(), 3);
                assert_eq!((label.similar_votes, label.dissimilar_votes), (similar, 3 - similar));
                assert_eq!(label.majority, if similar >= 2 { 1 } else { 2 });
            }
            None => assert!(pair_votes.len() < 3, "pair {pair_id} has three votes and no label"),
        }
    }
    assert!(acknowledged.len() >= 20, "only {} votes were acknowledged in three rounds", acknowledged.len());
    drop(server);
}
