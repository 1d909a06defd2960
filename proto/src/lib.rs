//! Generated protobuf messages and gRPC stubs for the facesim API, version 1.

#![allow(clippy::all, clippy::pedantic)]

/// Messages and services of package `facesim.v1`.
pub mod v1 {
    tonic::include_proto!("facesim.v1");
}

/// The encoded `FileDescriptorSet` of every facesim proto file (with its imports), for gRPC
/// reflection and for tools that need the schema at run time.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/facesim_descriptor.bin"));
