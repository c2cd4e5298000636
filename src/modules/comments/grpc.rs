//! gRPC adapter: `conduit.v1.CommentService` → `CommentService`.

use tonic::{Request, Response, Status};

use super::service::{CommentService, CommentView};
use crate::{
    auth::Auth,
    grpc::timestamp,
    proto::conduit::v1::{
        self as pb,
        comment_service_server::{CommentService as CommentApi, CommentServiceServer},
    },
};

pub struct CommentGrpc(CommentService);

pub fn server(comments: CommentService) -> CommentServiceServer<CommentGrpc> {
    CommentServiceServer::new(CommentGrpc(comments))
}

impl From<CommentView> for pb::Comment {
    fn from(c: CommentView) -> Self {
        pb::Comment {
            id: c.id,
            created_at: Some(timestamp(&c.created_at)),
            updated_at: Some(timestamp(&c.updated_at)),
            body: c.body,
            author: Some(c.author.into()),
        }
    }
}

#[tonic::async_trait]
impl CommentApi for CommentGrpc {
    async fn list_comments(
        &self,
        request: Request<pb::ListCommentsRequest>,
    ) -> Result<Response<pb::ListCommentsResponse>, Status> {
        let viewer = Auth::of(&request).optional()?;
        let comments = self.0.list(viewer, &request.into_inner().slug).await?;
        Ok(Response::new(pb::ListCommentsResponse {
            comments: comments.into_iter().map(Into::into).collect(),
        }))
    }

    async fn add_comment(
        &self,
        request: Request<pb::AddCommentRequest>,
    ) -> Result<Response<pb::AddCommentResponse>, Status> {
        let author = Auth::of(&request).required()?;
        let r = request.into_inner();
        let comment = self.0.add(author, &r.slug, r.body).await?;
        Ok(Response::new(pb::AddCommentResponse {
            comment: Some(comment.into()),
        }))
    }

    async fn delete_comment(
        &self,
        request: Request<pb::DeleteCommentRequest>,
    ) -> Result<Response<pb::DeleteCommentResponse>, Status> {
        let author = Auth::of(&request).required()?;
        let r = request.into_inner();
        self.0.delete(author, &r.slug, r.id).await?;
        Ok(Response::new(pb::DeleteCommentResponse {}))
    }
}
