//! The API is language-neutral: a Python client generated from `proto/` with grpcio-tools (and
//! grpc reflection) calls the real server. Needs `python3` with grpcio, grpcio-tools,
//! grpcio-reflection and grpcio-health-checking (scripts/test.sh installs them).

use facesim_client::pb;
use facesim_tests::{demo_dir, import_demo, wait_for_job, TestServer, ADMIN_TOKEN};

#[tokio::test]
async fn python_generated_client_calls_the_server() {
    let server = TestServer::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/python/client_check.py");
    let out_dir = tempfile::tempdir().unwrap();
    let face = std::fs::read_dir(demo_dir().join("Abdullah_Gul")).unwrap().next().unwrap().unwrap().path();
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--addr", &server.addr.to_string(), "--proto-dir"])
        .arg(root.join("proto"))
        .arg("--out-dir")
        .arg(out_dir.path())
        .arg("--face")
        .arg(&face)
        .env("FACESIM_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("python-client: 6 passed, 0 failed"), "{stdout}\n{stderr}");
}

/// The Python example of the README ranks an uploaded photo against the server's gallery.
#[tokio::test]
async fn python_example_ranks_an_uploaded_face() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let report = import_demo(&admin, 4).await;
    let job = wait_for_job(&admin, report.embedding_job_id).await;
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.message);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let face = std::fs::read_dir(demo_dir().join("Abdullah_Gul")).unwrap().next().unwrap().unwrap().path();
    let token = server.user("svc", pb::Role::Service).await;
    // The gallery is built in the background after the embeddings: ask until it answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let output = tokio::process::Command::new("python3")
            .arg(root.join("examples/python/rank_face.py"))
            .arg(&face)
            .args(["-k", "3", "--addr", &server.addr.to_string()])
            .env("FACESIM_TOKEN", &token)
            .output()
            .await
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() && stdout.contains("3 results") {
            assert!(stdout.starts_with("model descriptor/v1, euclidean, 3 results"), "{stdout}");
            let rows: Vec<&str> = stdout.lines().skip(1).collect();
            assert_eq!(rows.len(), 3, "{stdout}");
            // The photo itself is in the gallery: the nearest face is Abdullah Gul at distance ~0.
            let nearest: f32 = rows[0].split_whitespace().last().unwrap().parse().unwrap();
            assert!(rows[0].contains("Abdullah_Gul") && nearest < 0.01, "{stdout}");
            return;
        }
        assert!(stderr.contains("UNAVAILABLE") || stdout.contains("0 results"), "{stdout}\n{stderr}");
        assert!(std::time::Instant::now() < deadline, "no ranking within a minute: {stdout}\n{stderr}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
