//! Code generated from `proto/` by build.rs.

pub mod conduit {
    pub mod v1 {
        tonic::include_proto!("conduit.v1");
    }
}

/// Every conduit message and service, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("conduit_descriptor");
