//! Transport and token security: TLS for gRPC and gRPC-Web, plaintext and untrusted clients
//! refused cleanly, token expiry, and the failed-authentication limit.

use std::sync::Arc;
use std::time::Duration;

use facesim_client::{pb, Client, ClientError, TlsOptions};
use facesim_tests::{TestServer, ADMIN_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// A self-signed certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("generate a certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn trusting(cert_pem: &str) -> TlsOptions {
    TlsOptions { ca_pem: Some(cert_pem.as_bytes().to_vec()), domain: None }
}

#[tokio::test]
async fn tls_serves_grpc_to_clients_that_trust_it_and_refuses_the_rest() {
    let (cert, key) = self_signed();
    let server = TestServer::start_tls(&cert, &key).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);

    // A client that trusts the certificate works, by name and by IP address.
    let client = Client::connect_with(&server.url, Some(ADMIN_TOKEN), &trusting(&cert)).await.unwrap();
    let who = client.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(who.user.unwrap().name, "admin");
    let by_ip = format!("https://127.0.0.1:{}", server.addr.port());
    let client = Client::connect_with(&by_ip, Some(ADMIN_TOKEN), &trusting(&cert)).await.unwrap();
    client.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap();

    // A client with the usual public roots does not trust a self-signed certificate: it fails
    // at connect time and says why.
    let untrusted = Client::connect_with(&server.url, Some(ADMIN_TOKEN), &TlsOptions::default()).await;
    let error = untrusted.err().expect("an untrusted certificate is refused");
    let chain = format!("{:#}", anyhow::Error::new(error));
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    // Another certificate authority: refused as well.
    let (other, _) = self_signed();
    assert!(Client::connect_with(&server.url, Some(ADMIN_TOKEN), &trusting(&other)).await.is_err());

    // Plaintext gRPC to the TLS port fails promptly with an error, never hangs or succeeds.
    let plain = format!("http://127.0.0.1:{}", server.addr.port());
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let client = Client::connect(&plain, Some(ADMIN_TOKEN)).await?;
        client.admin().who_am_i(pb::WhoAmIRequest {}).await.map_err(ClientError::from)?;
        Ok::<_, ClientError>(())
    })
    .await
    .expect("plaintext against TLS ends within 20 s");
    assert!(outcome.is_err(), "plaintext gRPC must not reach a TLS server");

    // A CA for an http:// address is a mistake the client names.
    let mistake = Client::connect_with(&plain, None, &trusting(&cert)).await.err().unwrap();
    assert!(matches!(mistake, ClientError::CaWithoutHttps(_)), "{mistake}");
}

#[tokio::test]
async fn grpc_web_works_over_tls() {
    let (cert, key) = self_signed();
    let server = TestServer::start_tls(&cert, &key).await;

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let der = tokio_rustls::rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();

    // A browser-style gRPC-Web call (HTTP/1.1, no ALPN) inside the TLS session.
    let body = [0u8, 0, 0, 0, 0];
    let request = format!(
        "POST /facesim.v1.AdminService/WhoAmI HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    // The server may close without a TLS close_notify after `Connection: close`.
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("admin") && text.contains("grpc-status:0"), "{text}");

    // The same port refuses a plaintext HTTP/1.1 request: no answer in the clear.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"), "plaintext got an answer");
}

#[tokio::test]
async fn a_bad_certificate_or_key_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key\n").unwrap();
    let mut config = facesim_server::Config::with_data_dir(dir.path().join("data"));
    config.tls_cert = Some(dir.path().join("cert.pem"));
    config.tls_key = Some(dir.path().join("key.pem"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = facesim_server::serve(config.clone(), listener, std::future::pending(), |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("key.pem") && error.to_string().contains("private key"), "{error}");

    config.tls_cert = Some(dir.path().join("missing.pem"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = facesim_server::serve(config.clone(), listener, std::future::pending(), |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");

    // Well-formed PEM around garbage: refused by the TLS parser, still before anything opens.
    config.tls_cert = Some(dir.path().join("cert.pem"));
    std::fs::write(
        dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = facesim_server::serve(config.clone(), listener, std::future::pending(), |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("TLS identity"), "{error}");

    config.tls_key = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = facesim_server::serve(config, listener, std::future::pending(), |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("both"), "a certificate without its key is refused: {error}");
    assert!(!dir.path().join("data").exists(), "nothing is created before TLS is ready");
}

#[tokio::test]
async fn tokens_expire() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let user = admin
        .admin()
        .create_user(pb::CreateUserRequest {
            name: "brief".into(),
            role: pb::Role::Researcher as i32,
            token_ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let short = admin
        .admin()
        .create_token(pb::CreateTokenRequest {
            user_id: user.user.unwrap().id,
            description: "1 s".into(),
            ttl_seconds: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let client = admin.with_token(Some(&short.token)).unwrap();
    client.admin().who_am_i(pb::WhoAmIRequest {}).await.expect("valid before it expires");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let error = client.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert!(error.message().contains("expired"), "{}", error.message());
}

fn five_failures(config: &mut facesim_server::Config) {
    config.auth_failure_limit = 5;
}

#[tokio::test]
async fn failed_authentications_are_rate_limited_per_address() {
    let server = TestServer::start_with(five_failures).await;
    let guesser = server.client(Some("guessed-token-000000000000")).await;
    for attempt in 1..=5 {
        let error = guesser.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "attempt {attempt}");
    }
    let error = guesser.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    assert!(
        error.message().contains("too many failed") && error.message().contains("try again"),
        "{}",
        error.message()
    );

    // While the address is blocked even a right guess gets no answer, so guessing learns nothing.
    let admin = server.admin().await;
    let error = admin.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted);

    // Health stays open to probes from that address; missing tokens do not count as guesses.
    let health = admin.health().check(tonic_health::pb::HealthCheckRequest::default()).await.unwrap();
    assert_eq!(health.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test]
async fn missing_tokens_do_not_count_as_failed_logins() {
    let server = TestServer::start_with(five_failures).await;
    let anonymous = server.client(None).await;
    for _ in 0..10 {
        let error = anonymous.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
    }
    server.admin().await.admin().who_am_i(pb::WhoAmIRequest {}).await.expect("not blocked");
}
