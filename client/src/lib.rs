//! Rust client for the facesim server: one connection, a bearer token attached to every call,
//! typed stubs for each service, and helpers such as streaming a folder of faces in.

pub mod crowd;
mod import;
pub mod pair_list;
pub mod plot;
pub mod rounds;

use std::str::FromStr;

pub use facesim_proto::v1 as pb;
use pb::{
    admin_service_client::AdminServiceClient, dataset_service_client::DatasetServiceClient,
    job_service_client::JobServiceClient, labeling_service_client::LabelingServiceClient,
    model_service_client::ModelServiceClient, proposal_service_client::ProposalServiceClient,
    ranking_service_client::RankingServiceClient, training_service_client::TrainingServiceClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

pub use import::{scan_import_dir, FaceChoice, ImportEntry, ImportProgress};

/// Largest response the client accepts (image data and import reports can be large).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address {0:?}: {1}")]
    Address(String, String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the token contains characters that cannot be sent in a header")]
    BadToken,
    #[error("a TLS certificate authority was given for {0}, which is not an https:// address")]
    CaWithoutHttps(String),
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rpc(Status),
    #[error("cannot draw {path}: {message}")]
    Plot { path: String, message: String },
    #[error("nothing to draw: {0}")]
    NothingToPlot(&'static str),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

// Not `#[from]`: that would make the status the error's source too, and it would print twice.
impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        ClientError::Rpc(status)
    }
}

/// A gRPC code as words, e.g. "permission denied".
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}").chars().fold(String::new(), |mut out, c| {
        if c.is_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
        out
    })
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The transport every stub uses.
pub type Transport = InterceptedService<Channel, BearerAuth>;

/// How to check an `https://` server's certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM certificate(s) of the authority that signed the server's certificate (a private CA or
    /// a self-signed certificate). Without it the Mozilla root set is trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// The name to check the certificate against, when it differs from the address's host.
    pub domain: Option<String>,
}

impl TlsOptions {
    /// Trusts the authority in the PEM file at `path`.
    pub fn with_ca_file(path: &std::path::Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(path).map_err(|source| ClientError::Io { path: path.display().to_string(), source })?;
        Ok(TlsOptions { ca_pem: Some(pem), domain: None })
    }
}

/// A connection to a facesim server.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    auth: BearerAuth,
    /// The address it connected to (and how), when it made its own connection.
    server: Option<(String, TlsOptions)>,
}

macro_rules! stub {
    ($name:ident, $client:ident) => {
        pub fn $name(&self) -> $client<Transport> {
            $client::with_interceptor(self.channel.clone(), self.auth.clone())
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES)
        }
    };
}

impl Client {
    /// Connects to `server` (e.g. `http://127.0.0.1:50051`, or `https://…` for a server started
    /// with `--tls-cert`, checked against the Mozilla roots) and sends `token` with every call.
    pub async fn connect(server: &str, token: Option<&str>) -> Result<Self, ClientError> {
        Self::connect_with(server, token, &TlsOptions::default()).await
    }

    /// As [`Client::connect`], checking an `https://` server's certificate as `tls` says.
    pub async fn connect_with(server: &str, token: Option<&str>, tls: &TlsOptions) -> Result<Self, ClientError> {
        let mut endpoint =
            Endpoint::from_str(server).map_err(|e| ClientError::Address(server.into(), e.to_string()))?;
        if server.starts_with("https://") {
            let mut config = ClientTlsConfig::new();
            config = match &tls.ca_pem {
                Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
                None => config.with_webpki_roots(),
            };
            if let Some(domain) = &tls.domain {
                config = config.domain_name(domain.clone());
            }
            endpoint =
                endpoint.tls_config(config).map_err(|source| ClientError::Connect { addr: server.into(), source })?;
        } else if tls.ca_pem.is_some() {
            return Err(ClientError::CaWithoutHttps(server.into()));
        }
        let channel =
            endpoint.connect().await.map_err(|source| ClientError::Connect { addr: server.into(), source })?;
        Ok(Client { server: Some((server.to_string(), tls.clone())), ..Self::from_channel(channel, token)? })
    }

    /// A client for another user on a connection of its own (as a separate person's browser or
    /// terminal would have); shares this client's connection when it was made from a channel.
    pub async fn connect_as(&self, token: Option<&str>) -> Result<Self, ClientError> {
        match &self.server {
            Some((server, tls)) => Self::connect_with(server, token, tls).await,
            None => self.with_token(token),
        }
    }

    /// Uses an existing channel.
    pub fn from_channel(channel: Channel, token: Option<&str>) -> Result<Self, ClientError> {
        let auth = match token {
            Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| ClientError::BadToken)?),
            None => None,
        };
        Ok(Client { channel, auth: BearerAuth(auth), server: None })
    }

    /// The same connection with another token.
    pub fn with_token(&self, token: Option<&str>) -> Result<Self, ClientError> {
        Ok(Client { server: self.server.clone(), ..Self::from_channel(self.channel.clone(), token)? })
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    stub!(admin, AdminServiceClient);
    stub!(datasets, DatasetServiceClient);
    stub!(jobs, JobServiceClient);
    stub!(proposals, ProposalServiceClient);
    stub!(labeling, LabelingServiceClient);
    stub!(training, TrainingServiceClient);
    stub!(models, ModelServiceClient);
    stub!(ranking, RankingServiceClient);

    /// The standard gRPC health service (no token needed).
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn code_names_read_as_words() {
        assert_eq!(super::code_name(tonic::Code::PermissionDenied), "permission denied");
        assert_eq!(super::code_name(tonic::Code::NotFound), "not found");
    }
}
