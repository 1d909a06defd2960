//! Serves the built annotation UI on the API's port: every GET or HEAD is a file of the UI (RPCs
//! are always POST), so the page and the gRPC-Web calls share one origin. Sits outside the
//! gRPC-Web layer, which turns plain HTTP/1.1 requests away.

use std::convert::Infallible;
use std::path::Path;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};
use tower_http::services::ServeDir;

#[derive(Clone)]
pub struct UiLayer {
    files: ServeDir,
}

impl UiLayer {
    pub fn new(dir: &Path) -> Self {
        if !dir.join("index.html").is_file() {
            tracing::warn!(
                dir = %dir.display(),
                "no annotation UI here; build it with `cd annotation-ui && npm install && npm run build`"
            );
        }
        UiLayer { files: ServeDir::new(dir) }
    }
}

impl<S> Layer<S> for UiLayer {
    type Service = UiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UiService { inner, files: self.files.clone() }
    }
}

#[derive(Clone)]
pub struct UiService<S> {
    inner: S,
    files: ServeDir,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for UiService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
            let files = self.files.clone();
            return Box::pin(async move {
                let response = files.oneshot(request).await.unwrap_or_else(|e| match e {});
                Ok(response.map(tonic::body::Body::new))
            });
        }
        // The ready service is the one that must be called; keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(response.map(tonic::body::Body::new))
        })
    }
}
