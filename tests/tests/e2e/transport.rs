//! What the server offers every client: health, reflection (v1 and v1alpha) and gRPC-Web over
//! HTTP/1.1 for browsers.

use facesim_tests::{TestServer, ADMIN_TOKEN};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

#[tokio::test]
async fn health_reports_every_service_serving() {
    let server = TestServer::start().await;
    let mut health = server.client(None).await.health();
    // Ranking reports NOT_SERVING until its first index is built (moments after start, longer on
    // a loaded machine); a client that needs it watches for SERVING, as this test does.
    let mut watch =
        health.watch(HealthCheckRequest { service: "facesim.v1.RankingService".into() }).await.unwrap().into_inner();
    let serving = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(update) = watch.next().await {
            if update.unwrap().status == ServingStatus::Serving as i32 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(serving, Ok(true), "ranking never reported SERVING");
    for service in ["", "facesim.v1.DatasetService", "facesim.v1.RankingService", "facesim.v1.AdminService"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_every_service_in_both_versions() {
    let server = TestServer::start().await;
    let channel = server.client(None).await.channel();

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut response = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(message)) = response.next().await else { panic!("no reflection answer") };
    let Some(MessageResponse::ListServicesResponse(list)) = message.message_response else { panic!("wrong answer") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in facesim_server::api::SERVICE_NAMES {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n == "grpc.health.v1.Health"));

    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaRequest,
        server_reflection_response::MessageResponse as AlphaResponse, ServerReflectionRequest as AlphaMessage,
    };
    let request = AlphaMessage {
        host: String::new(),
        message_request: Some(AlphaRequest::FileContainingSymbol("facesim.v1.DatasetService".into())),
    };
    let mut response = AlphaClient::new(channel)
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(message)) = response.next().await else { panic!("no v1alpha answer") };
    let Some(AlphaResponse::FileDescriptorResponse(files)) = message.message_response else {
        panic!("wrong v1alpha answer")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// A browser's call: gRPC-Web over plain HTTP/1.1, with a base64-free binary body.
#[tokio::test]
async fn grpc_web_over_http1_works() {
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // An empty WhoAmIRequest: one uncompressed frame of length 0.
    let body = [0u8, 0, 0, 0, 0];
    let request = format!(
        "POST /facesim.v1.AdminService/WhoAmI HTTP/1.1\r\nHost: {}\r\nContent-Type: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_lowercase().contains("content-type: application/grpc-web"), "{text}");
    assert!(text.contains("admin"), "the WhoAmI answer names the admin: {text}");
    assert!(text.contains("grpc-status:0"), "the trailer frame reports OK: {text}");
}

async fn http1_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The annotation UI comes from the API's own port; nothing outside its folder does.
#[tokio::test]
async fn the_annotation_ui_is_served_at_the_root() {
    fn tune(config: &mut facesim_server::Config) {
        config.ui_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../annotation-ui/dist");
    }
    let server = TestServer::start_with(tune).await;
    let page = http1_get(server.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.to_lowercase().contains("content-type: text/html"), "{page}");
    assert!(page.contains("<script src=\"app.js\"></script>"), "{page}");
    let script = http1_get(server.addr, "/app.js").await;
    assert!(script.starts_with("HTTP/1.1 200"), "{}", &script[..script.len().min(300)]);
    assert!(
        script.to_lowercase().contains("content-type: text/javascript") && script.len() > 10_000,
        "the bundled app"
    );
    for outside in ["/../Cargo.toml", "/%2e%2e/Cargo.toml", "/..%2fCargo.toml", "/no-such-file.js"] {
        let answer = http1_get(server.addr, outside).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{outside}: {answer}");
    }
    // The API on the same port is untouched.
    let mut admin = server.client(Some(ADMIN_TOKEN)).await.admin();
    assert_eq!(
        admin.who_am_i(facesim_proto::v1::WhoAmIRequest {}).await.unwrap().into_inner().user.unwrap().name,
        "admin"
    );
}
