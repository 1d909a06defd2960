//! Bearer tokens are secrets: they never reach the server's log, at the levels operators run
//! with (info) and when debugging (debug everywhere, trace for facesim itself).

use std::sync::{Arc, Mutex};

use facesim_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use facesim_tests::process::*;

#[tokio::test]
async fn tokens_never_appear_in_the_log() {
    for filter in ["info", "debug,facesim_server=trace"] {
        let dir = tempfile::tempdir().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (mut server, url) = start_logging(dir.path(), Log::Collect(lines.clone()), filter, &[]);
        let mut admin_client = AdminServiceClient::connect(url.clone()).await.unwrap();
        let created = admin_client
            .create_user(admin(pb::CreateUserRequest {
                name: "rita".into(),
                role: pb::Role::Researcher as i32,
                token_ttl_seconds: 0,
            }))
            .await
            .unwrap()
            .into_inner();
        let user_id = created.user.as_ref().unwrap().id;
        let second = admin_client
            .create_token(admin(pb::CreateTokenRequest { user_id, description: "laptop".into(), ttl_seconds: 60 }))
            .await
            .unwrap()
            .into_inner();
        // Valid, wrong and revoked tokens all go through the authentication path.
        admin_client.who_am_i(authed_as(&created.token, pb::WhoAmIRequest {})).await.unwrap();
        let guess = "a-guessed-token-that-is-long-enough-42";
        assert!(admin_client.who_am_i(authed_as(guess, pb::WhoAmIRequest {})).await.is_err());
        let token_id = second.token_info.as_ref().unwrap().id;
        admin_client.revoke_token(admin(pb::RevokeTokenRequest { token_id })).await.unwrap();
        assert!(admin_client.who_am_i(authed_as(&second.token, pb::WhoAmIRequest {})).await.is_err());
        // A researcher calling an admin RPC: refused and logged as such.
        assert!(admin_client.list_users(authed_as(&created.token, pb::ListUsersRequest::default())).await.is_err());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        server.kill9();

        let log = lines.lock().unwrap().join("\n");
        assert!(log.contains("refused"), "{filter}: the refusals are logged ({} lines)", log.lines().count());
        assert!(log.contains("rita"), "{filter}: the caller's name is logged");
        for (what, secret) in [("admin", TOKEN), ("user", &created.token), ("second", &second.token), ("guess", guess)]
        {
            assert!(!log.contains(secret), "{filter}: the {what} token is in the log");
        }
    }
}
