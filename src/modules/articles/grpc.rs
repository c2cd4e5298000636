//! gRPC adapter: `conduit.v1.ArticleService` → `ArticleService`.

use tonic::{Request, Response, Status};

use super::service::{
    ArticleChanges, ArticleFilter, ArticlePage, ArticleService, ArticleView, NewArticle,
    PageRequest,
};
use crate::{
    auth::Auth,
    grpc::timestamp,
    proto::conduit::v1::{
        self as pb,
        article_service_server::{ArticleService as ArticleApi, ArticleServiceServer},
    },
};

pub struct ArticleGrpc(ArticleService);

pub fn server(articles: ArticleService) -> ArticleServiceServer<ArticleGrpc> {
    ArticleServiceServer::new(ArticleGrpc(articles))
}

impl From<ArticleView> for pb::Article {
    fn from(a: ArticleView) -> Self {
        pb::Article {
            created_at: Some(timestamp(&a.created_at)),
            updated_at: Some(timestamp(&a.updated_at)),
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

fn articles(page: ArticlePage) -> (Vec<pb::Article>, i64) {
    let total = i64::try_from(page.total).unwrap_or(i64::MAX);
    (page.articles.into_iter().map(Into::into).collect(), total)
}

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
        let page = PageRequest {
            limit: r.limit,
            offset: r.offset,
        };
        let (articles, articles_count) = articles(self.0.list(viewer, filter, page).await?);
        Ok(Response::new(pb::ListArticlesResponse {
            articles,
            articles_count,
        }))
    }

    async fn feed_articles(
        &self,
        request: Request<pb::FeedArticlesRequest>,
    ) -> Result<Response<pb::FeedArticlesResponse>, Status> {
        let viewer = Auth::of(&request).required()?;
        let r = request.into_inner();
        let page = PageRequest {
            limit: r.limit,
            offset: r.offset,
        };
        let (articles, articles_count) = articles(self.0.feed(viewer, page).await?);
        Ok(Response::new(pb::FeedArticlesResponse {
            articles,
            articles_count,
        }))
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
        let changes = ArticleChanges {
            title: r.title,
            description: r.description,
            body: r.body,
            tag_list: r.replace_tags.then_some(r.tag_list),
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
