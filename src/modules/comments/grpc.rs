//! gRPC adapter: `conduit.v1.CommentService` → `CommentService`.

use tonic::{Request, Response, Status};

use super::service::{CommentService, CommentView};
use crate::{
    auth::Auth,
    grpc::timestamp,
    pagination::PageQuery,
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
            create_time: Some(timestamp(&c.created_at)),
            update_time: Some(timestamp(&c.updated_at)),
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
        let r = request.into_inner();
        let query = PageQuery {
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let page = self.0.list_page(viewer, &r.slug, query).await?;
        Ok(Response::new(pb::ListCommentsResponse {
            comments: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
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
