//! Calls any method of the API with raw message bytes, so one loop can cover every RPC (the
//! access matrix, the hostile-input table).

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::TestServer;

/// Sends and receives message bytes as they are.
#[derive(Default, Clone)]
pub struct RawCodec;

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

/// Every facesim method path (`/facesim.v1.Service/Method`), from the compiled protos.
pub fn all_methods() -> Vec<String> {
    let fds = prost_types::FileDescriptorSet::decode(facesim_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = vec![];
    for file in fds.file.iter().filter(|f| f.package() == "facesim.v1") {
        for service in &file.service {
            for method in &service.method {
                out.push(format!("/facesim.v1.{}/{}", service.name(), method.name()));
            }
        }
    }
    out.sort();
    out
}

/// Calls `method` with one request message of `body` bytes (streaming methods get a stream of
/// that one message) and returns the first response message's bytes.
pub async fn call_raw(
    server: &TestServer,
    method: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let channel = server.client(None).await.channel();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(futures::stream::iter(vec![body]));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let path = method.parse().unwrap();
    let response = grpc.streaming(request, path, RawCodec).await?;
    Ok(response.into_inner().message().await?.unwrap_or_default())
}
