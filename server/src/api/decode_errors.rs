//! A request whose bytes are not a valid message of its method (a string that is not UTF-8, a
//! truncated field, a wrong wire type) is the caller's mistake: tonic's codec reports it as
//! INTERNAL, the code the gRPC library table gives to "error parsing request proto", which tells a
//! client the server broke. This layer answers INVALID_ARGUMENT instead and names the method.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

/// Prefix of the codec's message for undecodable requests (`prost::DecodeError` as text).
const DECODE_PREFIX: &str = "failed to decode Protobuf message";

#[derive(Clone, Default)]
pub struct DecodeErrorLayer;

impl<S> Layer<S> for DecodeErrorLayer {
    type Service = DecodeErrorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrorService { inner }
    }
}

#[derive(Clone)]
pub struct DecodeErrorService<S> {
    inner: S,
}

/// The codec's message, if this response is the codec's refusal of the request's bytes.
fn decode_failure(headers: &http::HeaderMap) -> Option<String> {
    // tonic reads (and percent-decodes) the status it wrote.
    let status = tonic::Status::from_header_map(headers)?;
    let message = status.message();
    (status.code() == tonic::Code::Internal && message.starts_with(DECODE_PREFIX)).then(|| message.to_string())
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DecodeErrorService<S>
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

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_string();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            // Decoding fails before the handler answers, so the status is in the headers of a
            // trailers-only response with an empty body.
            let Some(reason) = decode_failure(response.headers()) else { return Ok(response) };
            let reason = reason.trim_start_matches(DECODE_PREFIX).trim_start_matches(':').trim();
            let status = tonic::Status::invalid_argument(format!(
                "the request is not a valid {method} message ({reason}); strings must be UTF-8 and \
                 fields must match the method's .proto"
            ));
            tracing::info!(%method, "undecodable request");
            Ok(status.into_http())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_codecs_refusal_only() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", "13".parse().unwrap());
        headers.insert(
            "grpc-message",
            "failed%20to%20decode%20Protobuf%20message:%20invalid%20string%20value".parse().unwrap(),
        );
        assert_eq!(
            decode_failure(&headers).as_deref(),
            Some("failed to decode Protobuf message: invalid string value")
        );
        headers.insert("grpc-message", "the%20store%20failed".parse().unwrap());
        assert_eq!(decode_failure(&headers), None, "other INTERNAL errors stay INTERNAL");
        headers.insert("grpc-status", "3".parse().unwrap());
        assert_eq!(decode_failure(&headers), None);
    }
}
