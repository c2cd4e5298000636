//! Code generated from `proto/` by build.rs.

pub mod conduit {
    pub mod v1 {
        tonic::include_proto!("conduit.v1");
    }
}

/// Every conduit message and service, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("conduit_descriptor");

/// Every conduit gRPC method, as `/package.Service/Method`, from the descriptor set.
pub fn method_paths() -> &'static std::collections::HashSet<String> {
    static METHODS: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            use prost::Message;
            prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
                .map(|set| {
                    set.file
                        .iter()
                        .flat_map(|file| {
                            file.service.iter().flat_map(move |service| {
                                service.method.iter().map(move |method| {
                                    format!(
                                        "/{}.{}/{}",
                                        file.package(),
                                        service.name(),
                                        method.name()
                                    )
                                })
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        });
    &METHODS
}
