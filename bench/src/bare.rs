//! The bare baselines of issue 25: the answers conduit gives to `GET /api/articles` and
//! `ListArticles`, served as they are by a bare axum route and a bare tonic service, on
//! conduit's own server loop in the configured runtime layout (`CONDUIT__SERVER__RUNTIME`)
//! with no layers, no state and no database. Telemetry is initialised as `conduit serve`
//! does it (see `stack_probe`). conduit's throughput over these is what its stack and its
//! read path leave of the transport.
//!
//!   bench-bare REST_BODY GRPC_MESSAGE
//!
//! REST_BODY is the JSON conduit answered, GRPC_MESSAGE the protobuf `ListArticlesResponse`
//! (unframed: Connect's `application/proto` answer). Configuration as for `conduit serve`
//! (CONDUIT__* variables); prints `listening <addr>`.

use std::{future::pending, sync::Arc};

use axum::{Router, http::header::CONTENT_TYPE, routing::get};
use bytes::Bytes;
use conduit::{
    config::{Settings, Sources},
    modules::GrpcServices,
    proto::{
        EncodedArticles,
        conduit::v1::{
            self as pb,
            article_service_server::{ArticleService, ArticleServiceServer},
        },
    },
    readiness::Readiness,
    server, telemetry,
};
use prost::{Message, bytes::BufMut};
use tonic::{Request, Response, Status};
use tower::util::BoxCloneService;

/// The one answer it knows, kept encoded as the bare axum route keeps its JSON: a bare
/// service that cloned a decoded message, encoded it and dropped it per call (some 95,000
/// instructions for a page of 20) would flatter whatever is measured against it. Every
/// other method is UNIMPLEMENTED.
struct Articles(Bytes);

/// The whole message as `EncodedArticles`: written as it is, with no `next_page_token` of
/// its own (the kept bytes carry it).
struct Kept(Bytes);

impl EncodedArticles for Kept {
    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn encode(&self, buf: &mut dyn BufMut) {
        buf.put_slice(&self.0);
    }
}

fn only_list<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("bare: only ListArticles"))
}

#[tonic::async_trait]
impl ArticleService for Articles {
    async fn list_articles(
        &self,
        _request: Request<pb::ListArticlesRequest>,
    ) -> Result<Response<pb::ListArticlesResponse>, Status> {
        Ok(Response::new(pb::ListArticlesResponse::encoded(
            Kept(self.0.clone()),
            String::new(),
        )))
    }

    async fn feed_articles(
        &self,
        _request: Request<pb::FeedArticlesRequest>,
    ) -> Result<Response<pb::FeedArticlesResponse>, Status> {
        only_list()
    }

    async fn get_article(
        &self,
        _request: Request<pb::GetArticleRequest>,
    ) -> Result<Response<pb::GetArticleResponse>, Status> {
        only_list()
    }

    async fn create_article(
        &self,
        _request: Request<pb::CreateArticleRequest>,
    ) -> Result<Response<pb::CreateArticleResponse>, Status> {
        only_list()
    }

    async fn update_article(
        &self,
        _request: Request<pb::UpdateArticleRequest>,
    ) -> Result<Response<pb::UpdateArticleResponse>, Status> {
        only_list()
    }

    async fn delete_article(
        &self,
        _request: Request<pb::DeleteArticleRequest>,
    ) -> Result<Response<pb::DeleteArticleResponse>, Status> {
        only_list()
    }

    async fn favorite_article(
        &self,
        _request: Request<pb::FavoriteArticleRequest>,
    ) -> Result<Response<pb::FavoriteArticleResponse>, Status> {
        only_list()
    }

    async fn unfavorite_article(
        &self,
        _request: Request<pb::UnfavoriteArticleRequest>,
    ) -> Result<Response<pb::UnfavoriteArticleResponse>, Status> {
        only_list()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(rest_body), Some(grpc_message)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bench-bare REST_BODY GRPC_MESSAGE");
    };
    let rest_body = Bytes::from(std::fs::read(rest_body)?);
    let listed = Bytes::from(std::fs::read(grpc_message)?);
    // Refuse a file that is not the answer rather than serve it.
    pb::ListArticlesResponse::decode(listed.as_ref())?;
    let settings = Arc::new(Settings::load(Sources::from_process())?);
    let _telemetry = telemetry::init(&settings)?;

    let rest = Router::new().route(
        "/api/articles",
        get(move || {
            let body = rest_body.clone();
            async move { ([(CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let grpc = GrpcServices::default().with(ArticleServiceServer::new(Articles(listed)));
    let app = BoxCloneService::new(rest.merge(grpc.router));

    let listener = server::bind(&settings.server).await?;
    println!("listening {}", listener.local_addr()?);
    let _threads = server::serve(
        listener,
        app,
        None,
        &settings.server,
        Readiness::new(),
        pending(),
    )
    .await;
    Ok(())
}
