//! AdminService: users, roles and tokens.

use std::sync::Arc;

use facesim_proto::v1::{self as pb, admin_service_server::AdminService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{self, principal, required_id};
use super::status::from_join;
use crate::state::AppState;

pub struct AdminApi {
    state: Arc<AppState>,
}

impl AdminApi {
    pub fn new(state: Arc<AppState>) -> Self {
        AdminApi { state }
    }

    /// Runs a synchronous auth operation on a blocking thread and flushes before answering, so an
    /// acknowledged change survives a crash.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::auth::Auth) -> Result<T, crate::auth::AuthError> + Send + 'static,
    ) -> Result<T, Status> {
        let auth = self.state.auth.clone();
        let value = tokio::task::spawn_blocking(move || f(&auth)).await.map_err(from_join)??;
        self.state.store.flush().await.map_err(super::status::from_store)?;
        Ok(value)
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let req = request.into_inner();
        let role = convert::role_from_proto(req.role)?;
        let (user, token) = self.write(move |auth| auth.create_user(&req.name, role, req.token_ttl_seconds)).await?;
        tracing::info!(user_id = user.id, role = %role, "user created");
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(convert::user(&user)),
            token_info: Some(convert::token_info(&token.record)),
            token: token.secret,
        }))
    }

    #[instrument(skip_all)]
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        let id = required_id(request.get_ref().user_id, "user_id")?;
        Ok(Response::new(convert::user(&self.state.auth.user(id)?)))
    }

    #[instrument(skip_all)]
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let req = request.into_inner();
        let size = convert::page_size(req.page_size)?;
        let start = convert::decode_page_token(&req.page_token)?;
        let mut users = self.state.auth.users_from(start, size + 1)?;
        let next = (users.len() > size).then(|| users.pop().map(|u| u.id)).flatten();
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(convert::user).collect(),
            next_page_token: convert::encode_page_token(next),
        }))
    }

    #[instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn set_user_disabled(
        &self,
        request: Request<pb::SetUserDisabledRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let id = required_id(req.user_id, "user_id")?;
        if id == caller.user_id && req.disabled {
            return Err(Status::failed_precondition("an admin cannot disable itself; ask another admin"));
        }
        let user = self.write(move |auth| auth.set_user_disabled(id, req.disabled)).await?;
        Ok(Response::new(convert::user(&user)))
    }

    #[instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let req = request.into_inner();
        let id = required_id(req.user_id, "user_id")?;
        let token = self.write(move |auth| auth.issue_token(id, &req.description, req.ttl_seconds)).await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token_info: Some(convert::token_info(&token.record)),
            token: token.secret,
        }))
    }

    #[instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let id = required_id(request.get_ref().user_id, "user_id")?;
        let tokens = self.state.auth.tokens_of(id)?;
        Ok(Response::new(pb::ListTokensResponse { tokens: tokens.iter().map(convert::token_info).collect() }))
    }

    #[instrument(skip_all, fields(token_id = request.get_ref().token_id))]
    async fn revoke_token(&self, request: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::TokenInfo>, Status> {
        let id = required_id(request.get_ref().token_id, "token_id")?;
        let token = self.write(move |auth| auth.revoke_token(id)).await?;
        Ok(Response::new(convert::token_info(&token)))
    }

    #[instrument(skip_all)]
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = principal(&request)?;
        let user = self.state.auth.user(caller.user_id)?;
        Ok(Response::new(pb::WhoAmIResponse { user: Some(convert::user(&user)), token_id: caller.token_id }))
    }
}
