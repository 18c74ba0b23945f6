//! Generated protobuf and gRPC types (proto/meridian/v1). Protobuf types stay at the
//! edge: internal code converts through the `From` impls next to each internal type.
#![allow(missing_docs, clippy::all)]

/// Package `meridian.v1`.
pub mod v1 {
    tonic::include_proto!("meridian.v1");

    /// Encoded file descriptor set of every Meridian proto (for reflection and the
    /// golden compatibility test).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("meridian_descriptor");
}
