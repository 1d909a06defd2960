//! The README's quickstart through the real `facesim` binary against a real server: create a
//! researcher, import every bundled demo face, page through them.

use std::path::PathBuf;
use std::process::Command;

use facesim_tests::{TestServer, ADMIN_TOKEN as ADMIN};

fn facesim(server: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facesim"))
        .args(args)
        .env("FACESIM_SERVER", server)
        .env("FACESIM_TOKEN", token)
        .output()
        .expect("run facesim");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `story` (blocking CLI calls, given the server address) against a real server on a
/// loopback port (the shared harness's, with a temp data dir), then stops the server cleanly.
async fn with_server(story: impl FnOnce(String) + Send + 'static) {
    with_tuned_server(|_| {}, story).await
}

async fn with_tuned_server(tune: fn(&mut facesim_server::Config), story: impl FnOnce(String) + Send + 'static) {
    let server = TestServer::start_with(tune).await;
    let url = server.url.clone();
    let result = tokio::task::spawn_blocking(move || story(url)).await;
    server.stop().await;
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_imports_the_demo_and_pages_through_it() {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo");
    let demo = demo.to_str().unwrap().to_string();
    with_server(move |server| {
        let (ok, token, err) = facesim(&server, ADMIN, &["admin", "create-user", "rita", "--role", "researcher"]);
        assert!(ok, "{err}");
        let token = token.trim().to_string();
        assert!(err.contains("rita") && token.starts_with("fsm_"), "{err} {token}");

        let (ok, out, err) = facesim(&server, &token, &["whoami"]);
        assert!(ok && out.starts_with("rita (user 2, role researcher"), "{out} {err}");

        let (ok, out, err) = facesim(&server, &token, &["dataset", "import", &demo]);
        assert!(ok, "{err}");
        assert!(out.contains("dataset lfw-demo: 2115 imported, 0 duplicates, 0 rejected (2115 files)"), "{out}");

        let (ok, out, _) = facesim(&server, &token, &["dataset", "summary"]);
        assert!(
            ok && out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["lfw-demo", "423", "2115"]),
            "{out}"
        );

        // One page, then a hint for the next one.
        let (ok, out, err) = facesim(&server, &token, &["dataset", "list", "--page-size", "10"]);
        assert!(ok && out.lines().count() == 11, "{out}");
        let next = err.trim().strip_prefix("more: --page-token ").expect("a next-page hint").to_string();
        let (ok, out, _) = facesim(&server, &token, &["dataset", "list", "--page-size", "10", "--page-token", &next]);
        assert!(ok && out.lines().nth(1).unwrap().trim_start().starts_with("11 "), "{out}");

        // Every page: all images, each once.
        let (ok, out, _) = facesim(&server, &token, &["dataset", "list", "--all", "--page-size", "500"]);
        let ids: Vec<u64> =
            out.lines().skip(1).map(|l| l.split_whitespace().next().unwrap().parse().unwrap()).collect();
        assert!(ok && ids.len() == 2115 && ids.windows(2).all(|w| w[0] < w[1]), "{} ids", ids.len());

        // An annotator may not browse the dataset, and is told why.
        let (_, annotator, _) = facesim(&server, ADMIN, &["admin", "create-user", "anna", "--role", "annotator"]);
        let (ok, _, err) = facesim(&server, annotator.trim(), &["dataset", "list"]);
        assert!(!ok && err.contains("permission denied") && err.contains("annotator"), "{err}");
        let (ok, _, err) = facesim(&server, "wrong", &["whoami"]);
        assert!(!ok && err.contains("unauthenticated"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_waits_for_embeddings_then_faces_compare_and_pairs_are_proposed() {
    let dir = tempfile::tempdir().unwrap();

    // Two people of the demo, copied into a folder of their own.
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo");
    let small = dir.path().join("two-people");
    for person in ["Colin_Powell", "Serena_Williams"] {
        std::fs::create_dir_all(small.join(person)).unwrap();
        for n in 1..=3 {
            let file = format!("{person}_{n:04}.jpg");
            std::fs::copy(demo.join(person).join(&file), small.join(person).join(&file)).unwrap();
        }
    }
    let small = small.to_str().unwrap().to_string();
    let colin = demo.join("Colin_Powell/Colin_Powell_0004.jpg").to_str().unwrap().to_string();
    with_server(move |server| {
        let (ok, out, err) = facesim(&server, ADMIN, &["dataset", "import", &small, "--wait"]);
        assert!(ok, "{err}");
        assert!(out.contains("6 imported"), "{out}");
        assert!(out.contains("embeddings: job 1 succeeded: embedded 6 images"), "{out}");

        let (ok, out, _) = facesim(&server, ADMIN, &["jobs", "list"]);
        assert!(ok && out.lines().nth(1).unwrap().contains("embedding") && out.contains("6/6"), "{out}");

        // Images 1-3 are Colin Powell, 4-6 Serena Williams (import order).
        let distance = |a: &str, b: &str| -> f64 {
            let (ok, out, err) = facesim(&server, ADMIN, &["compare", a, b]);
            assert!(ok && out.starts_with("distance ") && out.contains("model descriptor/v1"), "{out} {err}");
            out.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let (same, other) = (distance("1", "2"), distance("1", "4"));
        assert!(same < other, "same person {same}, different people {other}");
        let (_, out, _) = facesim(&server, ADMIN, &["compare", "1", "2"]);
        assert!(out.contains("same person / look alike"), "{out}");
        // A file that was never imported, against stored images of the same and another person.
        assert!(distance(&colin, "3") < distance(&colin, "6"));

        let (ok, out, _) = facesim(&server, ADMIN, &["embed", "5"]);
        assert!(ok && out.split_whitespace().count() == 128, "{out}");

        // Ranking: new images become searchable within about a second of being embedded.
        let mut tries = 0;
        let out = loop {
            let (ok, out, err) = facesim(&server, ADMIN, &["rank", "1", "-k", "10"]);
            assert!(ok, "{err}");
            if out.lines().count() == 2 + 5 || tries == 50 {
                break out;
            }
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert!(out.starts_with("model descriptor/v1 · Euclidean distance · exact search · 5 results"), "{out}");
        let first: Vec<&str> = out.lines().nth(2).unwrap().split_whitespace().collect();
        assert!(first[0] == "1" && ["2", "3"].contains(&first[1]) && first[3].starts_with("Colin_Powell"), "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["rank", &colin, "--group", "-k", "5"]);
        let rows: Vec<Vec<&str>> = out.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
        assert!(ok && rows.len() == 2, "{out}");
        assert!(rows[0][3].starts_with("Colin_Powell") && rows[0][5] == "3", "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["rank", "1", "--exclude-identity", "--metric", "cosine"]);
        assert!(ok && out.contains("cosine similarity") && !out.contains("Colin_Powell"), "{out}");
        let (ok, _, err) = facesim(&server, ADMIN, &["rank", "1", "-k", "5000"]);
        assert!(!ok && err.contains("k must be 1-1000"), "{err}");

        // Retrieval: each of the 6 images a probe against the other 5.
        let (ok, out, err) = facesim(&server, ADMIN, &["eval", "retrieval", "--dataset", "two-people"]);
        assert!(ok, "{err}");
        assert!(out.contains("6 probes, 2 identities, model descriptor/v1"), "{out}");
        let figure = |name: &str| -> f64 {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {out}"));
            line.split_whitespace().last().unwrap().parse().unwrap()
        };
        // Two people the descriptor tells apart: every probe's own person comes first.
        assert_eq!((figure("mAP"), figure("Rank@1 "), figure("Rank@5 ")), (1.0, 1.0, 1.0), "{out}");
        let (ok, _, err) = facesim(&server, ADMIN, &["compare", "1", "/no/such/file.jpg"]);
        assert!(!ok && err.contains("cannot read image file"), "{err}");
        let (ok, _, err) = facesim(&server, ADMIN, &["compare", "1", "999"]);
        assert!(!ok && err.contains("not found"), "{err}");

        // The distance distribution of the 3 x 3 cross-identity pairs, in the terminal and as a PNG.
        let png = std::env::temp_dir().join(format!("facesim-cli-hist-{}.png", std::process::id()));
        let png_arg = png.to_str().unwrap();
        let (ok, out, err) =
            facesim(&server, ADMIN, &["pairs", "histogram", "--bins", "6", "--mark", "0.6", "--png", png_arg]);
        assert!(ok, "{err}");
        assert!(out.starts_with("model descriptor/v1: 9 pairs"), "{out}");
        assert!(out.lines().any(|l| l.contains(" 100.000%")) && out.contains("histogram drawn to"), "{out}");
        let picture = image::open(&png).expect("a readable PNG");
        assert_eq!((picture.width(), picture.height()), (1000, 600));
        std::fs::remove_file(&png).ok();

        // Propose the 4 nearest pairs in batches of 3, in ranked order, then close the second batch.
        let args = ["pairs", "propose", "--budget", "4", "--batch-size", "3", "--batch-order", "ranked"];
        let (ok, out, err) = facesim(&server, ADMIN, &args);
        assert!(ok, "{err}");
        assert!(out.contains("proposed 4 pairs of 6 images in 2 batches; in ranked order"), "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["batches", "show", "1"]);
        assert!(ok && out.contains("order:     ranked"), "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["pairs", "list", "--batch", "1"]);
        let distances: Vec<f64> =
            out.lines().skip(1).map(|l| l.split_whitespace().nth(5).unwrap().parse().unwrap()).collect();
        assert!(ok && distances.len() == 3 && distances.windows(2).all(|w| w[0] <= w[1]), "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["batches", "close", "2"]);
        assert!(ok && out.trim() == "batch 2 is closed (1 pairs)", "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["batches", "list"]);
        let states: Vec<&str> = out.lines().skip(1).map(|l| l.split_whitespace().nth(1).unwrap()).collect();
        assert!(ok && states == ["open", "closed"], "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["pairs", "show", "1"]);
        assert!(ok && out.contains("Colin_Powell") && out.contains("Serena_Williams"), "{out}");
        let (ok, _, err) = facesim(&server, ADMIN, &["pairs", "propose"]);
        assert!(!ok && err.contains("--threshold"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotator_labels_in_the_terminal_and_a_simulated_crowd_finishes_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo");
    let small = dir.path().join("three-people");
    for person in ["Colin_Powell", "Serena_Williams", "Tony_Blair"] {
        std::fs::create_dir_all(small.join(person)).unwrap();
        for n in 1..=2 {
            let file = format!("{person}_{n:04}.jpg");
            std::fs::copy(demo.join(person).join(&file), small.join(person).join(&file)).unwrap();
        }
    }
    let small = small.to_str().unwrap().to_string();
    let exports = dir.path().to_path_buf();
    with_server(move |server| {
        let (ok, _, err) = facesim(&server, ADMIN, &["dataset", "import", &small, "--wait"]);
        assert!(ok, "{err}");
        let (ok, _, err) = facesim(&server, ADMIN, &["pairs", "propose", "--budget", "3"]);
        assert!(ok, "{err}");
        let (ok, _, err) = facesim(&server, ADMIN, &["label"]);
        assert!(!ok && err.contains("no labeling instructions set"), "{err}");
        let (ok, out, err) = facesim(
            &server,
            ADMIN,
            &[
                "labeling",
                "instructions",
                "set",
                "--text",
                "Do they look alike?",
                "--similar",
                "1,2,same person",
                "--dissimilar",
                "1,3",
            ],
        );
        assert!(ok && out.contains("1 similar and 1 dissimilar"), "{out} {err}");
        let (ok, _, err) = facesim(&server, ADMIN, &["label"]);
        assert!(!ok && err.contains("permission denied"), "only annotators label: {err}");

        // An annotator labels one pair in the terminal: too fast first, then a real answer.
        let (_, token, _) = facesim(&server, ADMIN, &["admin", "create-user", "tess", "--role", "annotator"]);
        let faces = exports.join("faces");
        let mut label = Command::new(env!("CARGO_BIN_EXE_facesim"))
            .args(["label", "--faces-dir", faces.to_str().unwrap()])
            .env("FACESIM_SERVER", &server)
            .env("FACESIM_TOKEN", token.trim())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = label.stdin.take().unwrap();
        use std::io::Write;
        std::thread::sleep(std::time::Duration::from_millis(300));
        stdin.write_all(b"s\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        stdin.write_all(b"d\nq\n").unwrap();
        drop(stdin);
        let out = label.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.contains("Do they look alike?") && out.contains("too fast") && out.contains("voted dissimilar"),
            "{out}"
        );
        assert!(out.contains("1 votes this session"), "{out}");
        assert_eq!(std::fs::read_dir(&faces).unwrap().count(), 4, "two pairs' faces were saved: {out}");

        // Three simulated annotators finish the batch through the API.
        let (ok, out, err) = facesim(
            &server,
            ADMIN,
            &[
                "crowd",
                "simulate",
                "--annotators",
                "3",
                "--seconds-per-vote",
                "1.05",
                "--truth",
                "identity",
                "--error-rate",
                "0",
            ],
        );
        assert!(ok && out.starts_with("8 votes"), "{out} {err}");
        let (ok, out, _) = facesim(&server, ADMIN, &["labeling", "progress", "1"]);
        assert!(ok && out.contains("3 votes: 3") && out.contains("labels: 0 similar, 3 dissimilar"), "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["labeling", "annotators"]);
        assert!(ok && out.lines().count() == 5 && out.contains("tess"), "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["labeling", "agreement"]);
        assert!(ok && out.contains("complete pairs:        3"), "{out}");

        let csv_path = exports.join("labels.csv");
        let (ok, _, err) = facesim(&server, ADMIN, &["labels", "export", "-o", csv_path.to_str().unwrap()]);
        assert!(ok && err.contains("3 labels written"), "{err}");
        let csv = std::fs::read_to_string(&csv_path).unwrap();
        let rows: Vec<&str> = csv.lines().collect();
        assert!(rows[0].starts_with("pair_id,batch_id,image_a,image_b,identity_a,identity_b"), "{csv}");
        assert_eq!(rows.len(), 4, "{csv}");
        assert!(rows[1..].iter().all(|r| r.contains(",dissimilar,")), "{csv}");
        let (ok, out, _) = facesim(&server, ADMIN, &["labels", "votes", "--format", "jsonl"]);
        let votes: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(ok && votes.len() == 9, "{out}");
        assert!(votes.iter().all(|v| v["answer_seconds"].as_f64().unwrap() >= 1.0), "{out}");
        assert!(votes.iter().all(|v| v["counted"] == serde_json::json!(true) && v["choice"].is_string()), "{out}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_trains_shows_evaluates_and_activates_a_model() {
    let dir = tempfile::tempdir().unwrap();
    // Four demo people with their first four images, and an LFW-format list of their pairs.
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo");
    let faces = dir.path().join("faces");
    let people = ["Colin_Powell", "Serena_Williams", "George_W_Bush", "Tony_Blair"];
    let mut lines = Vec::new();
    for (i, person) in people.iter().enumerate() {
        std::fs::create_dir_all(faces.join(person)).unwrap();
        for n in 1..=4 {
            let file = format!("{person}_{n:04}.jpg");
            std::fs::copy(demo.join(person).join(&file), faces.join(person).join(&file)).unwrap();
        }
        for (a, b) in [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)] {
            lines.push(format!("{person}\t{a}\t{b}"));
        }
        for other in &people[i + 1..] {
            for n in 1..=4 {
                lines.push(format!("{person}\t{n}\t{other}\t{}", 5 - n));
            }
        }
    }
    let pairs = dir.path().join("pairs.txt");
    std::fs::write(&pairs, format!("{}\n{}\n", lines.len(), lines.join("\n"))).unwrap();
    let plots = dir.path().join("plots");
    let (faces, pairs, plots) =
        (faces.to_str().unwrap().to_string(), pairs.to_str().unwrap().to_string(), plots.to_path_buf());
    with_server(move |server| {
        let (ok, _, err) = facesim(&server, ADMIN, &["dataset", "import", &faces, "--dataset", "four", "--wait"]);
        assert!(ok, "{err}");
        let train = ["train", "start", "--arch", "gaml", "--pairs", &pairs, "--dataset", "four"];
        let (ok, out, err) = facesim(
            &server,
            ADMIN,
            &[&train[..], &["--epochs", "3", "--batch-size", "8", "--seed", "4", "--split", "6:2:2"]].concat(),
        );
        assert!(ok, "{out} {err}");
        assert!(out.contains("training job 2 started on cpu for model gaml/1"), "{out}");
        let epochs: Vec<&str> = out.lines().filter(|l| l.starts_with("epoch ")).collect();
        assert_eq!(epochs.len(), 3, "one line per epoch: {out}");
        assert!(epochs[2].starts_with("epoch    3/3: train loss") && epochs[2].contains("validation AUC"), "{out}");
        assert!(out.contains("job 2 succeeded: model gaml/1: test ROC-AUC"), "{out}");

        let (ok, out, _) = facesim(&server, ADMIN, &["models", "list"]);
        let rows: Vec<&str> = out.lines().skip(1).collect();
        assert!(ok && rows.len() == 2, "{out}");
        assert!(rows[0].starts_with("descriptor/v1  active") && rows[1].starts_with("gaml/1         ready"), "{out}");
        assert!(rows[1].contains("geometry-aware") && rows[1].contains(" 48 "), "{out}");

        let plots_arg = plots.to_str().unwrap();
        let (ok, out, err) = facesim(&server, ADMIN, &["models", "show", "gaml/1", "--plots", plots_arg]);
        assert!(ok, "{err}");
        assert!(out.contains("settings:     3 epochs, batch 8, adam lr 0.0001"), "{out}");
        assert!(out.contains("seed 4") && out.contains("descriptor/v1"), "{out}");
        for png in ["roc.png", "loss.png"] {
            let picture = image::open(plots.join(png)).expect("a readable PNG");
            assert!(picture.width() >= 600, "{png}");
        }

        let (ok, out, err) = facesim(
            &server,
            ADMIN,
            &["train", "evaluate", "--model", "gaml/1", "--pairs", &pairs, "--dataset", "four"],
        );
        assert!(ok && out.contains("of gaml/1 on 48 pairs: ROC-AUC"), "{out} {err}");
        let (ok, out, _) = facesim(&server, ADMIN, &["train", "evaluations"]);
        assert!(ok && out.lines().count() == 3, "header, the training's and the new evaluation: {out}");
        // Compared with the active descriptor on its few test pairs, nothing can be concluded:
        // refused with the comparison in words, then forced, and both show in the history.
        let (ok, out, err) = facesim(&server, ADMIN, &["models", "compare", "gaml/1"]);
        assert!(
            ok && out.contains("gaml/1") && out.contains("descriptor/v1") && out.contains("verdict:"),
            "{out} {err}"
        );
        let (ok, _, err) = facesim(&server, ADMIN, &["models", "activate", "gaml/1"]);
        assert!(!ok && err.contains("not activated") && err.contains("ROC-AUC"), "{err}");
        let (ok, out, err) = facesim(&server, ADMIN, &["models", "activate", "gaml/1", "--force"]);
        assert!(ok && out.starts_with("gaml/1 is now the active model"), "{out} {err}");
        let (ok, out, _) = facesim(&server, ADMIN, &["models", "show", "gaml/1", "--plots", plots_arg]);
        assert!(ok && out.contains("activation refused") && out.contains("activated (forced)"), "{out}");
        assert!(out.contains("95% CI"), "{out}");
        let (ok, out, _) = facesim(&server, ADMIN, &["train", "list"]);
        assert!(ok && out.lines().nth(1).unwrap().contains("succeeded"), "{out}");

        let (ok, _, err) = facesim(&server, ADMIN, &["train", "start", "--arch", "cnn", "--split", "8:1"]);
        assert!(!ok && err.contains("--split takes three"), "{err}");
        let (ok, _, err) = facesim(&server, ADMIN, &["models", "show", "cnn/9"]);
        assert!(!ok && err.contains("no model \"cnn/9\""), "{err}");
    })
    .await;
}

/// A reduced `facesim demo` (30 people, small rounds, a few epochs) against a running server:
/// the report's figures hold together and agree with what the server stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduced_demo_runs_the_closed_loop_and_reports_consistent_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (faces, out) = (dir.path().join("faces"), dir.path().join("out"));
    // The first 30 people of the bundled demo faces.
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo");
    let mut people: Vec<PathBuf> =
        std::fs::read_dir(&demo).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    people.sort();
    for person in people.iter().take(30) {
        let target = faces.join(person.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for file in std::fs::read_dir(person).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, target.join(file.file_name().unwrap())).unwrap();
        }
    }
    let files = faces.read_dir().unwrap().map(|p| p.unwrap().path().read_dir().unwrap().count()).sum::<usize>();

    // The annotators still wait the server's minimum answer time, set to 0 here for speed.
    with_tuned_server(
        |c| c.min_answer_millis = 0,
        move |server| {
            let args = [
                "demo",
                "--connect",
                "--faces",
                faces.to_str().unwrap(),
                "--dir",
                out.to_str().unwrap(),
                "--round-pairs",
                "100",
                "--annotators",
                "10",
                "--gaml-epochs",
                "3",
                "--cnn-epochs",
                "1",
                "--cnn-batch",
                "16",
            ];
            let (ok, stdout, stderr) = facesim(&server, ADMIN, &args);
            assert!(ok, "demo failed: {stdout}\n{stderr}");
            assert!(stdout.contains("=== facesim demo report"), "{stdout}");
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();

            assert_eq!(report["files"].as_u64().unwrap() as usize, files);
            assert_eq!((report["identities"].as_u64(), report["imported"].as_u64()), (Some(30), Some(files as u64)));
            // Two rounds, every proposed pair labeled; round 2 was proposed by the activated model.
            let rounds = report["rounds"].as_array().unwrap();
            let summary: Vec<(u64, u64, u64)> = rounds
                .iter()
                .map(|r| (r["round"].as_u64().unwrap(), r["pairs"].as_u64().unwrap(), r["labeled"].as_u64().unwrap()))
                .collect();
            assert_eq!(summary, vec![(1, 100, 100), (2, 75, 75)]);
            let activated = report["activated"].as_str().unwrap();
            let round2_proposer = report["active_in_round_2"].as_str().unwrap();
            assert_eq!(rounds[0]["proposed_by"][0], "descriptor/v1");
            assert_eq!(rounds[1]["proposed_by"], serde_json::json!([round2_proposer]));
            assert_eq!(report["votes"].as_u64(), Some(3 * 175), "three votes a pair");
            assert_eq!(report["agreement"]["complete_pairs"].as_u64(), Some(175));

            // Models: trained on round 1 (100 labels) twice, then on both rounds (175); figures in range.
            let models = report["models"].as_array().unwrap();
            let labels: Vec<u64> = models.iter().map(|m| m["label_count"].as_u64().unwrap()).collect();
            assert_eq!(labels, vec![100, 100, 175]);
            for m in models {
                for side in ["scores", "baseline"] {
                    let auc = m[side]["roc_auc"].as_f64().unwrap();
                    let mcc = m[side]["mcc"].as_f64().unwrap();
                    assert!((0.0..=1.0).contains(&auc) && (-1.0..=1.0).contains(&mcc), "{m}");
                }
            }
            // After round 1: the better round-1 model if the guard found it better than the
            // descriptor, else the descriptor; at the end: the model retrained on both rounds if
            // the guard found it better than that one, else that one.
            assert!(
                round2_proposer == models[0]["id"]
                    || round2_proposer == models[1]["id"]
                    || round2_proposer == "descriptor/v1"
            );
            assert!(activated == round2_proposer || activated == models[2]["id"], "{activated}");
            let selection = report["model_selection"].as_array().unwrap();
            assert_eq!(selection.len(), 2);
            assert!(selection.iter().all(|v| {
                let v = v.as_str().unwrap();
                v.starts_with("activated ") || v.starts_with("kept ")
            }));
            // Retrieval in range for the descriptor and the active model; ranking answered k = 5
            // results from the active model.
            let retrieval = report["retrieval"].as_array().unwrap();
            assert_eq!(
                (retrieval[0]["model_id"].as_str(), retrieval[1]["model_id"].as_str()),
                (Some("descriptor/v1"), Some(activated))
            );
            for r in retrieval {
                assert_eq!(r["probes"].as_u64().unwrap() as usize, files);
                assert!((0.0..=1.0).contains(&r["map"].as_f64().unwrap()));
                let at: Vec<f64> =
                    r["rank_at"].as_array().unwrap().iter().map(|x| x["share"].as_f64().unwrap()).collect();
                assert!(at.windows(2).all(|w| w[0] <= w[1]), "Rank@K grows with K: {at:?}");
            }
            let ranking = report["ranking"].as_array().unwrap();
            assert_eq!(ranking.len(), 5);
            assert!(ranking.iter().all(|r| r["model_id"] == activated && r["results"] == 5), "{ranking:?}");
            for plot in report["plots"].as_array().unwrap() {
                for png in ["roc", "loss"] {
                    let bytes = std::fs::read(plot[png].as_str().unwrap()).unwrap();
                    assert!(bytes.starts_with(b"\x89PNG"), "{plot}");
                }
            }

            // Stored labels are the majority of the stored votes, and the loop report agrees.
            let (ok, labels_csv, err) = facesim(&server, ADMIN, &["labels", "export", "--format", "csv"]);
            assert!(ok, "{err}");
            let (ok, votes_csv, err) = facesim(&server, ADMIN, &["labels", "votes", "--format", "csv"]);
            assert!(ok, "{err}");
            check_majorities(&labels_csv, &votes_csv, 175);
            let (ok, out, err) = facesim(&server, ADMIN, &["loop", "report"]);
            assert!(ok, "{err}");
            assert!(
                (out.contains("(active)") || out.contains("active model: descriptor/v1"))
                    && out
                        .lines()
                        .filter(|l| l.trim_start().starts_with("1 ") || l.trim_start().starts_with("2 "))
                        .count()
                        >= 2,
                "{out}"
            );
        },
    )
    .await;
}

/// Every exported label is the 2-of-3 majority of the counted votes exported for its pair, and
/// no pair has more than three counted votes.
fn check_majorities(labels_csv: &str, votes_csv: &str, expected_labels: usize) {
    let mut votes: std::collections::HashMap<String, (u32, u32)> = std::collections::HashMap::new();
    let mut reader = csv::Reader::from_reader(votes_csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (pair, choice, counted) = (column("pair_id"), column("choice"), column("counted"));
    for row in reader.records() {
        let row = row.unwrap();
        if &row[counted] != "true" {
            continue;
        }
        let entry = votes.entry(row[pair].to_string()).or_default();
        match &row[choice] {
            "similar" => entry.0 += 1,
            "dissimilar" => entry.1 += 1,
            other => panic!("vote choice {other}"),
        }
    }
    assert!(votes.values().all(|(s, d)| s + d <= 3), "at most three counted votes a pair");
    let mut reader = csv::Reader::from_reader(labels_csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (pair, majority) = (column("pair_id"), column("majority"));
    let mut n = 0;
    for row in reader.records() {
        let row = row.unwrap();
        let (similar, dissimilar) = votes[&row[pair]];
        assert_eq!(similar + dissimilar, 3, "pair {}", &row[pair]);
        let expected = if similar >= 2 { "similar" } else { "dissimilar" };
        assert_eq!(&row[majority], expected, "pair {}: {similar} similar, {dissimilar} dissimilar", &row[pair]);
        n += 1;
    }
    assert_eq!(n, expected_labels);
}

/// `facesim bench soak` for a few seconds against a real server: annotators, a ranker and a
/// training run together, every call succeeds, and the report has latencies per RPC and memory
/// samples of the server (this test's own process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_runs_every_kind_of_load_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let faces = dir.path().join("faces");
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo");
    let mut people: Vec<_> =
        std::fs::read_dir(&demo).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    people.sort();
    for person in &people[..8] {
        let target = faces.join(person.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for file in std::fs::read_dir(person).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, target.join(file.file_name().unwrap())).unwrap();
        }
    }
    let faces = faces.to_str().unwrap().to_string();
    with_server(move |server| {
        let (ok, _, err) = facesim(&server, ADMIN, &["dataset", "import", &faces, "--dataset", "soaktest", "--wait"]);
        assert!(ok, "{err}");
        let pid = std::process::id().to_string();
        let args = [
            "bench",
            "soak",
            "--seconds",
            "4",
            "--annotators",
            "3",
            "--rankers",
            "1",
            "--train-epochs",
            "1",
            "--answer-millis",
            "1000",
            "--dataset",
            "soaktest",
            "--sample-seconds",
            "1",
            "--server-pid",
            &pid,
        ];
        let (ok, out, err) = facesim(&server, ADMIN, &args);
        assert!(ok, "{err}\n{out}");
        let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON report on stdout");
        assert_eq!(report["errors"], 0, "{report}");
        for rpc in ["NextTask", "SubmitVote", "Rank", "StartTraining"] {
            assert!(report["rpc"][rpc]["ok"].as_u64().unwrap_or(0) > 0, "{rpc} was called: {report}");
            assert!(report["rpc"][rpc]["p99_ms"].as_f64().unwrap() >= report["rpc"][rpc]["p50_ms"].as_f64().unwrap());
        }
        let samples = report["rss"].as_array().unwrap();
        assert!(samples.len() >= 3, "{report}");
        assert!(samples.iter().all(|s| s["rss_mib"].as_f64().is_some_and(|m| m > 10.0)), "{report}");
    })
    .await;
}
