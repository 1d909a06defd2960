//! The API is language-neutral: a Python client generated from `proto/` with grpcio-tools (and
//! grpc reflection) calls the real server. Needs `python3` with grpcio, grpcio-tools,
//! grpcio-reflection and grpcio-health-checking (scripts/test.sh installs them).

use facesim_tests::{demo_dir, TestServer, ADMIN_TOKEN};

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
