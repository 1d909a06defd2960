//! The tower layer in front of every service: opens the RPC's tracing span, checks the bearer
//! token against the access table and hands the [`Principal`] to the handler in the request's
//! extensions. Health and reflection stay open, as probes and generic clients expect. Addresses
//! that present too many invalid tokens are refused for a while ([`FailureLimiter`]). Tokens are
//! never logged: spans carry the user's name and role, refusals only their code.

use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::auth::{allowed_roles, Auth, AuthError, FailureLimiter, Principal};

#[derive(Clone)]
pub struct AuthLayer {
    auth: Auth,
    limiter: FailureLimiter,
}

impl AuthLayer {
    pub fn new(auth: Auth, limiter: FailureLimiter) -> Self {
        AuthLayer { auth, limiter }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone(), limiter: self.limiter.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
    limiter: FailureLimiter,
}

/// The caller's IP address, over plain TCP or TLS.
fn peer_ip<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    let tcp = extensions
        .get::<TcpConnectInfo>()
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().map(|tls| tls.get_ref()));
    tcp.and_then(|info| info.remote_addr()).map(|addr| addr.ip())
}

/// The token of an `authorization: Bearer <token>` header, if any.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl<S> AuthService<S> {
    fn check(
        &self,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
        method: &str,
        allowed: &[crate::auth::Role],
    ) -> Result<Principal, AuthError> {
        let now = std::time::Instant::now();
        if let Some(addr) = peer {
            if let Some(wait) = self.limiter.blocked_for(addr, now) {
                return Err(AuthError::TooManyFailures { addr, retry_after_seconds: wait.as_secs().max(1) });
            }
        }
        let token = bearer_token(headers).ok_or(AuthError::MissingToken)?;
        let principal = self.auth.authenticate(token).inspect_err(|error| {
            if let (AuthError::InvalidToken, Some(addr)) = (error, peer) {
                self.limiter.record_failure(addr, now);
            }
        })?;
        self.auth.authorize(&principal, method, allowed)?;
        Ok(principal)
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().to_string();
        let span =
            tracing::info_span!("rpc", method = %method, user = tracing::field::Empty, role = tracing::field::Empty);
        if let Some(allowed) = allowed_roles(&method) {
            match self.check(request.headers(), peer_ip(&request), &method, allowed) {
                Ok(principal) => {
                    span.record("user", principal.user_name.as_str());
                    span.record("role", principal.role.as_str());
                    request.extensions_mut().insert(principal);
                }
                Err(error) => {
                    let status = super::status::from_auth(error);
                    span.in_scope(|| tracing::info!(code = ?status.code(), "refused"));
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        // The ready service is the one that must be called; keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let started = Instant::now();
                let response = inner.call(request).await;
                if let Ok(response) = &response {
                    let status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0");
                    tracing::debug!(grpc_status = status, elapsed_ms = started.elapsed().as_millis() as u64, "done");
                }
                response
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_tokens() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(http::header::AUTHORIZATION, "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("xyz"));
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
