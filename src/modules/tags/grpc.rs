//! gRPC adapter: `conduit.v1.TagService` → `TagService`.

use tonic::{Request, Response, Status};

use super::service::TagService;
use crate::proto::conduit::v1::{
    self as pb,
    tag_service_server::{TagService as TagApi, TagServiceServer},
};

pub struct TagGrpc(TagService);

pub fn server(tags: TagService) -> TagServiceServer<TagGrpc> {
    TagServiceServer::new(TagGrpc(tags))
}

#[tonic::async_trait]
impl TagApi for TagGrpc {
    async fn list_tags(
        &self,
        _request: Request<pb::ListTagsRequest>,
    ) -> Result<Response<pb::ListTagsResponse>, Status> {
        Ok(Response::new(pb::ListTagsResponse {
            tags: self.0.list().await?.to_vec(),
        }))
    }
}
