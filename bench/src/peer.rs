//! The benchmark's baseline: the RealWorld read paths as a minimal axum + sqlx service
//! would write them — one hand-written SQL statement per request, no middleware, no
//! telemetry — over conduit's own Postgres schema, so both serve the very same rows.
//! Not a product: no validation beyond what the reads need, no writes.
//!
//! Env: DATABASE_URL (Postgres), JWT_SECRET (conduit's, to read its tokens), ADDR.
//! Prints `listening <addr>` once ready.

mod sql;

use std::{collections::HashMap, net::SocketAddr};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use chrono::{DateTime, SecondsFormat, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{PgPool, Row, postgres::PgPoolOptions};

#[derive(Clone)]
struct Peer {
    db: PgPool,
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Peer {
    fn viewer(&self, headers: &HeaderMap) -> Option<i64> {
        let token = headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Token ")?;
        decode::<Claims>(token, &self.key, &self.validation)
            .ok()?
            .claims
            .sub
            .parse()
            .ok()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")?;
    let secret = std::env::var("JWT_SECRET")?;
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:0".into())
        .parse()?;
    let db = PgPoolOptions::new()
        .max_connections(16)
        .connect(&url)
        .await?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["conduit"]);
    let peer = Peer {
        db,
        key: DecodingKey::from_secret(secret.as_bytes()),
        validation,
    };
    let app = Router::new()
        .route("/api/tags", get(tags))
        .route("/api/articles", get(list))
        .route("/api/articles/feed", get(feed))
        .route("/api/articles/{slug}", get(article))
        .route(
            "/api/articles/{slug}/favorite",
            axum::routing::post(favorite).delete(favorite),
        )
        .with_state(peer);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

type Answer = Result<Json<Value>, StatusCode>;

fn failed(e: sqlx::Error) -> StatusCode {
    eprintln!("bench-peer: {e}");
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn tags(State(peer): State<Peer>) -> Answer {
    let rows = sqlx::query(sql::TAGS)
        .fetch_all(&peer.db)
        .await
        .map_err(failed)?;
    let names: Vec<String> = rows.iter().map(|r| r.get("name")).collect();
    Ok(Json(json!({ "tags": names })))
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn render(row: &sqlx::postgres::PgRow) -> Value {
    json!({
        "slug": row.get::<String, _>("slug"),
        "title": row.get::<String, _>("title"),
        "description": row.get::<String, _>("description"),
        "tagList": row.get::<Vec<String>, _>("tag_list"),
        "createdAt": timestamp(row.get("created_at")),
        "updatedAt": timestamp(row.get("updated_at")),
        "favorited": row.get::<bool, _>("favorited"),
        "favoritesCount": row.get::<i64, _>("favorites_count"),
        "author": {
            "username": row.get::<String, _>("username"),
            "bio": row.get::<Option<String>, _>("bio"),
            "image": row.get::<Option<String>, _>("image"),
            "following": row.get::<bool, _>("following"),
        },
    })
}

fn page(rows: Vec<sqlx::postgres::PgRow>) -> Json<Value> {
    let total = rows.first().map(|r| r.get::<i64, _>("total")).unwrap_or(0);
    let articles: Vec<Value> = rows.iter().map(render).collect();
    Json(json!({ "articles": articles, "articlesCount": total }))
}

fn bounds(params: &HashMap<String, String>) -> (i64, i64) {
    let number = |key: &str, default: i64| {
        params
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        number("limit", 20).clamp(1, 100),
        number("offset", 0).max(0),
    )
}

async fn list(
    State(peer): State<Peer>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let (limit, offset) = bounds(&params);
    let rows = sqlx::query(sql::list())
        .bind(peer.viewer(&headers))
        .bind(limit)
        .bind(offset)
        .bind(params.get("tag"))
        .fetch_all(&peer.db)
        .await
        .map_err(failed)?;
    Ok(page(rows))
}

async fn feed(
    State(peer): State<Peer>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let viewer = peer.viewer(&headers).ok_or(StatusCode::UNAUTHORIZED)?;
    let (limit, offset) = bounds(&params);
    let rows = sqlx::query(sql::feed())
        .bind(viewer)
        .bind(limit)
        .bind(offset)
        .fetch_all(&peer.db)
        .await
        .map_err(failed)?;
    Ok(page(rows))
}

async fn article(State(peer): State<Peer>, headers: HeaderMap, Path(slug): Path<String>) -> Answer {
    let row = sqlx::query(sql::article())
        .bind(peer.viewer(&headers))
        .bind(slug)
        .fetch_optional(&peer.db)
        .await
        .map_err(failed)?
        .ok_or(StatusCode::NOT_FOUND)?;
    let mut article = render(&row);
    article["body"] = json!(row.get::<String, _>("body"));
    Ok(Json(json!({ "article": article })))
}

/// Favourites (POST) or unfavourites (DELETE), then answers the article as the viewer sees
/// it: one statement for the change, one for the answer, as a hand-written service would.
async fn favorite(
    State(peer): State<Peer>,
    method: axum::http::Method,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Answer {
    let viewer = peer.viewer(&headers).ok_or(StatusCode::UNAUTHORIZED)?;
    let change = if method == axum::http::Method::POST {
        "INSERT INTO favorites (user_id, article_id, created_at) \
         SELECT $1, id, now() FROM articles WHERE slug = $2 ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM favorites WHERE user_id = $1 \
         AND article_id = (SELECT id FROM articles WHERE slug = $2)"
    };
    sqlx::query(change)
        .bind(viewer)
        .bind(&slug)
        .execute(&peer.db)
        .await
        .map_err(failed)?;
    article(State(peer), headers, Path(slug)).await
}
