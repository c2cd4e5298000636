//! Articles: listing (global, filtered, feed), authoring, favorites.

mod fields;
mod grpc;
mod reads;
/// Public for the benchmark harness, which runs its statements against the database
/// alone; modules use the service.
pub mod repo;
pub(crate) mod rest;
pub mod service;
pub mod slug;

use super::{GrpcServices, Module, tune_grpc};
use crate::operations::{
    Access::{Optional, Required},
    Effect::{Read, Write},
    Operation, both,
};

pub const MODULE: Module = Module {
    name: "articles",
    operations: OPERATIONS,
    rest: rest::router,
    grpc: |state| {
        GrpcServices::default().with(tune_grpc!(
            grpc::server(service::ArticleService::new(state)),
            state
        ))
    },
};

/// What this module serves, on each protocol (see `operations`).
#[rustfmt::skip]
pub const OPERATIONS: &[Operation] = &[
    both("GET /api/articles", "/conduit.v1.ArticleService/ListArticles", Optional, Read),
    both("GET /api/articles/feed", "/conduit.v1.ArticleService/FeedArticles", Required, Read),
    both("GET /api/articles/{slug}", "/conduit.v1.ArticleService/GetArticle", Optional, Read),
    both("POST /api/articles", "/conduit.v1.ArticleService/CreateArticle", Required, Write),
    both("PUT /api/articles/{slug}", "/conduit.v1.ArticleService/UpdateArticle", Required, Write),
    both("DELETE /api/articles/{slug}", "/conduit.v1.ArticleService/DeleteArticle", Required, Write),
    both("POST /api/articles/{slug}/favorite", "/conduit.v1.ArticleService/FavoriteArticle", Required, Write),
    both("DELETE /api/articles/{slug}/favorite", "/conduit.v1.ArticleService/UnfavoriteArticle", Required, Write),
];
