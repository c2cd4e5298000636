//! gRPC adapter: `conduit.v1.ArticleService` → `ArticleService`.

use tonic::{Request, Response, Status};

use super::service::{ArticleChanges, ArticleFilter, ArticleService, ArticleView, NewArticle};
use crate::{
    auth::Auth,
    grpc::{UpdateMask, timestamp},
    pagination::PageQuery,
    proto::conduit::v1::{
        self as pb,
        article_service_server::{ArticleService as ArticleApi, ArticleServiceServer},
    },
};

mod list;

pub struct ArticleGrpc(ArticleService);

pub fn server(articles: ArticleService) -> ArticleServiceServer<ArticleGrpc> {
    ArticleServiceServer::new(ArticleGrpc(articles))
}

impl From<ArticleView> for pb::Article {
    fn from(a: ArticleView) -> Self {
        pb::Article {
            create_time: Some(timestamp(&a.created_at)),
            update_time: Some(timestamp(&a.updated_at)),
            slug: a.slug,
            title: a.title,
            description: a.description,
            body: a.body,
            tag_list: a.tag_list,
            favorited: a.favorited,
            favorites_count: a.favorites_count,
            author: Some(a.author.into()),
        }
    }
}

fn page_query(page_size: i32, page_token: String) -> PageQuery {
    PageQuery {
        page_size,
        page_token,
    }
}

/// The fields UpdateArticle may change; the rest of `Article` is output only.
const UPDATABLE: &[&str] = &["title", "description", "body", "tag_list"];

#[tonic::async_trait]
impl ArticleApi for ArticleGrpc {
    async fn list_articles(
        &self,
        request: Request<pb::ListArticlesRequest>,
    ) -> Result<Response<pb::ListArticlesResponse>, Status> {
        let viewer = Auth::of(&request).optional()?;
        let r = request.into_inner();
        let filter = ArticleFilter {
            tag: r.tag,
            author: r.author,
            favorited: r.favorited,
        };
        let query = page_query(r.page_size, r.page_token);
        let page = self.0.list_page(viewer, filter, query).await?;
        Ok(Response::new(list::response(
            page.articles,
            page.next_page_token,
        )))
    }

    async fn feed_articles(
        &self,
        request: Request<pb::FeedArticlesRequest>,
    ) -> Result<Response<pb::FeedArticlesResponse>, Status> {
        let viewer = Auth::of(&request).required()?;
        let r = request.into_inner();
        let query = page_query(r.page_size, r.page_token);
        let page = self.0.feed_page(viewer, query).await?;
        Ok(Response::new(list::response(
            page.articles,
            page.next_page_token,
        )))
    }

    async fn get_article(
        &self,
        request: Request<pb::GetArticleRequest>,
    ) -> Result<Response<pb::GetArticleResponse>, Status> {
        let viewer = Auth::of(&request).optional()?;
        let article = self.0.get(viewer, &request.into_inner().slug).await?;
        Ok(Response::new(pb::GetArticleResponse {
            article: Some(article.into()),
        }))
    }

    async fn create_article(
        &self,
        request: Request<pb::CreateArticleRequest>,
    ) -> Result<Response<pb::CreateArticleResponse>, Status> {
        let author = Auth::of(&request).required()?;
        let r = request.into_inner();
        let input = NewArticle {
            title: r.title,
            description: r.description,
            body: r.body,
            tag_list: r.tag_list,
        };
        let article = self.0.create(author, input).await?;
        Ok(Response::new(pb::CreateArticleResponse {
            article: Some(article.into()),
        }))
    }

    async fn update_article(
        &self,
        request: Request<pb::UpdateArticleRequest>,
    ) -> Result<Response<pb::UpdateArticleResponse>, Status> {
        let author = Auth::of(&request).required()?;
        let r = request.into_inner();
        let a = r.article.unwrap_or_default();
        let mask = UpdateMask::resolve(r.update_mask, UPDATABLE, |field| match field {
            "title" => !a.title.is_empty(),
            "description" => !a.description.is_empty(),
            "body" => a.body.is_some(),
            _ => !a.tag_list.is_empty(),
        })?;
        let changes = ArticleChanges {
            title: mask.pick("title", a.title),
            description: mask.pick("description", a.description),
            body: mask.pick("body", a.body.unwrap_or_default()),
            tag_list: mask.pick("tag_list", a.tag_list),
        };
        let article = self.0.update(author, &r.slug, changes).await?;
        Ok(Response::new(pb::UpdateArticleResponse {
            article: Some(article.into()),
        }))
    }

    async fn delete_article(
        &self,
        request: Request<pb::DeleteArticleRequest>,
    ) -> Result<Response<pb::DeleteArticleResponse>, Status> {
        let author = Auth::of(&request).required()?;
        self.0.delete(author, &request.into_inner().slug).await?;
        Ok(Response::new(pb::DeleteArticleResponse {}))
    }

    async fn favorite_article(
        &self,
        request: Request<pb::FavoriteArticleRequest>,
    ) -> Result<Response<pb::FavoriteArticleResponse>, Status> {
        let viewer = Auth::of(&request).required()?;
        let article = self.0.favorite(viewer, &request.into_inner().slug).await?;
        Ok(Response::new(pb::FavoriteArticleResponse {
            article: Some(article.into()),
        }))
    }

    async fn unfavorite_article(
        &self,
        request: Request<pb::UnfavoriteArticleRequest>,
    ) -> Result<Response<pb::UnfavoriteArticleResponse>, Status> {
        let viewer = Auth::of(&request).required()?;
        let article = self
            .0
            .unfavorite(viewer, &request.into_inner().slug)
            .await?;
        Ok(Response::new(pb::UnfavoriteArticleResponse {
            article: Some(article.into()),
        }))
    }
}
