//! Every RPC of the API × every kind of caller: no token, a garbage token, a revoked token, a
//! disabled user, and each of the four roles. The expected access is written out here from the
//! product rules, independently of the server's own table.

use facesim_client::pb;
use facesim_tests::raw::{all_methods, call_raw};
use facesim_tests::{TestServer, ADMIN_TOKEN};
use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Admin,
    Researcher,
    Annotator,
    Service,
}

/// The product's access rules, stated once more from the issue text.
fn allowed(method: &str, who: Who) -> bool {
    let (service, name) = method.trim_start_matches("/facesim.v1.").split_once('/').unwrap();
    if name == "WhoAmI" {
        return true;
    }
    let research = matches!(who, Who::Admin | Who::Researcher);
    match service {
        "AdminService" => who == Who::Admin,
        "LabelingService" => match name {
            "NextTask" | "SubmitVote" | "Skip" | "MyStats" => who == Who::Annotator,
            "GetInstructions" => who != Who::Service,
            _ => research,
        },
        "RankingService" => who != Who::Annotator,
        "ModelService" if !matches!(name, "ActivateModel" | "CompareModels" | "DeleteModel") => who != Who::Annotator,
        _ => research,
    }
}

async fn call(server: &TestServer, method: &str, token: Option<&str>) -> Code {
    match call_raw(server, method, token, Vec::new()).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The matrix presents hundreds of invalid tokens from one address on purpose; the failed-login
/// limit has its own test (`security.rs`).
fn no_failure_limit(config: &mut facesim_server::Config) {
    config.auth_failure_limit = 0;
}

#[tokio::test]
async fn every_rpc_checks_token_and_role() {
    let server = TestServer::start_with(no_failure_limit).await;
    let researcher = server.user("rita", pb::Role::Researcher).await;
    let annotator = server.user("anna", pb::Role::Annotator).await;
    let service = server.user("svc", pb::Role::Service).await;

    // A revoked token and a disabled user's token.
    let admin = server.admin().await;
    let revoked = server.user("gone", pb::Role::Researcher).await;
    let gone =
        admin.with_token(Some(&revoked)).unwrap().admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    admin.admin().revoke_token(pb::RevokeTokenRequest { token_id: gone.token_id }).await.unwrap();
    let disabled = server.user("off", pb::Role::Researcher).await;
    let off =
        admin.with_token(Some(&disabled)).unwrap().admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    admin
        .admin()
        .set_user_disabled(pb::SetUserDisabledRequest { user_id: off.user.unwrap().id, disabled: true })
        .await
        .unwrap();

    let methods = all_methods();
    assert!(methods.len() >= 50, "the whole API is designed: {} methods", methods.len());
    let callers = [
        (Who::Admin, ADMIN_TOKEN),
        (Who::Researcher, researcher.as_str()),
        (Who::Annotator, annotator.as_str()),
        (Who::Service, service.as_str()),
    ];
    let mut failures = vec![];
    for method in &methods {
        for bad in [None, Some("fsm_not_a_real_token"), Some(revoked.as_str()), Some(disabled.as_str())] {
            let code = call(&server, method, bad).await;
            if code != Code::Unauthenticated {
                failures.push(format!("{method} with token {bad:?}: got {code:?}, want Unauthenticated"));
            }
        }
        for (who, token) in callers {
            let code = call(&server, method, Some(token)).await;
            let ok = if allowed(method, who) {
                !matches!(code, Code::Unauthenticated | Code::PermissionDenied)
            } else {
                code == Code::PermissionDenied
            };
            if !ok {
                failures.push(format!("{method} as {who:?}: got {code:?}, allowed: {}", allowed(method, who)));
            }
        }
    }
    assert!(failures.is_empty(), "{} access failures:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn refusals_carry_readable_messages() {
    let server = TestServer::start().await;
    let annotator = server.user("anna", pb::Role::Annotator).await;
    let client = server.client(Some(&annotator)).await;
    let err = client.datasets().list_images(pb::ListImagesRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("annotator") && err.message().contains("ListImages"), "{}", err.message());

    let err = server.client(None).await.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("Bearer"), "{}", err.message());

    // Health and reflection need no token, as probes and generic clients expect.
    let health = server.client(None).await.health().check(tonic_health::pb::HealthCheckRequest::default()).await;
    assert_eq!(
        health.unwrap().into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn admin_manages_users_and_tokens() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let created = admin
        .admin()
        .create_user(pb::CreateUserRequest {
            name: "rita".into(),
            role: pb::Role::Researcher as i32,
            token_ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let user = created.user.unwrap();
    let err = admin
        .admin()
        .create_user(pb::CreateUserRequest {
            name: "rita".into(),
            role: pb::Role::Annotator as i32,
            token_ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = admin
        .admin()
        .create_user(pb::CreateUserRequest { name: "x".into(), role: 0, token_ttl_seconds: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .admin()
        .create_user(pb::CreateUserRequest { name: "x".into(), role: 42, token_ttl_seconds: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let second = admin
        .admin()
        .create_token(pb::CreateTokenRequest { user_id: user.id, description: "laptop".into(), ttl_seconds: 3600 })
        .await
        .unwrap()
        .into_inner();
    assert!(second.token_info.as_ref().unwrap().expire_time.is_some());
    let tokens =
        admin.admin().list_tokens(pb::ListTokensRequest { user_id: user.id }).await.unwrap().into_inner().tokens;
    assert_eq!(tokens.len(), 2);
    // Listings never reveal secrets, only a short prefix.
    for t in &tokens {
        assert_eq!(t.prefix.len(), 8);
        assert!(created.token.starts_with(&t.prefix) || second.token.starts_with(&t.prefix), "{}", t.prefix);
    }
    let rita = server.client(Some(&second.token)).await;
    assert_eq!(rita.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().user.unwrap().name, "rita");
    let err = admin.admin().get_user(pb::GetUserRequest { user_id: 9999 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = admin.admin().revoke_token(pb::RevokeTokenRequest { token_id: 9999 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let me = admin.admin().who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner().user.unwrap();
    let err = admin
        .admin()
        .set_user_disabled(pb::SetUserDisabledRequest { user_id: me.id, disabled: true })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}
