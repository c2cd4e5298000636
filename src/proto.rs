//! Code generated from `proto/` by build.rs, and the descriptors it was generated from.

use std::{collections::HashSet, sync::LazyLock};

use prost_reflect::{DescriptorPool, MethodDescriptor};

mod articles_response;

pub use articles_response::{ArticlesResponse, EncodedArticles};

pub mod conduit {
    pub mod v1 {
        tonic::include_proto!("conduit.v1");

        // Both lists are `ArticlesResponse` (build.rs); their proto names stay usable.
        pub use crate::proto::ArticlesResponse as FeedArticlesResponse;
        pub use crate::proto::ArticlesResponse as ListArticlesResponse;
    }
}

/// Every conduit message and service, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("conduit_descriptor");

/// The package every conduit service is in.
pub const PACKAGE: &str = "conduit.v1";

/// The descriptors of what is served and what it answers with: conduit.v1, gRPC health
/// and the `google.rpc` error details. Read at run time by the Connect translation (which
/// transcodes JSON by them) and by the operations table's checks.
pub fn descriptors() -> &'static DescriptorPool {
    static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
        let mut pool = DescriptorPool::new();
        for set in [
            FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_types::pb::FILE_DESCRIPTOR_SET,
        ] {
            add_new_files(&mut pool, set);
        }
        pool
    });
    &POOL
}

/// Adds the files of an encoded descriptor set that `pool` lacks: the sets share the
/// well-known types, which each carries its own copy of.
fn add_new_files(pool: &mut DescriptorPool, set: &[u8]) {
    use prost::Message;
    // The sets are compiled into this binary; one that does not decode is a build fault,
    // which the tests below catch, not a condition to serve around.
    let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
        return;
    };
    let files: Vec<_> = set
        .file
        .into_iter()
        .filter(|file| pool.get_file_by_name(file.name()).is_none())
        .collect();
    if let Err(error) = pool.add_file_descriptor_protos(files) {
        tracing::error!(%error, "an embedded descriptor set does not resolve");
    }
}

/// The method a path names (`/conduit.v1.ArticleService/ListArticles`), if the
/// descriptors hold it.
pub fn method(path: &str) -> Option<MethodDescriptor> {
    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
    descriptors()
        .get_service_by_name(service)?
        .methods()
        .find(|method| method.name() == name)
}

/// Whether the protos mark the method `idempotency_level = NO_SIDE_EFFECTS`, which is
/// what lets Connect clients call it with GET (and caches keep the answer).
pub fn side_effect_free(method: &MethodDescriptor) -> bool {
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .is_some_and(|options| {
            options.idempotency_level()
                == prost_types::method_options::IdempotencyLevel::NoSideEffects
        })
}

/// Every conduit gRPC method, as `/package.Service/Method`, from the descriptor set.
pub fn method_paths() -> &'static HashSet<String> {
    static METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
        descriptors()
            .services()
            .filter(|service| service.package_name() == PACKAGE)
            .flat_map(|service| {
                service
                    .methods()
                    .map(|method| format!("/{}/{}", service.full_name(), method.name()))
                    .collect::<Vec<_>>()
            })
            .collect()
    });
    &METHODS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_package_and_the_error_details_resolve() {
        let pool = descriptors();
        for service in [
            "conduit.v1.ArticleService",
            "conduit.v1.UserService",
            "grpc.health.v1.Health",
        ] {
            assert!(pool.get_service_by_name(service).is_some(), "{service}");
        }
        assert!(pool.get_message_by_name("google.rpc.ErrorInfo").is_some());
        assert!(method_paths().contains("/conduit.v1.ArticleService/ListArticles"));
        assert!(
            method_paths()
                .iter()
                .all(|path| path.starts_with("/conduit.v1.")),
            "health and reflection are not conduit methods"
        );
    }
}
