//! Realistic data, written through conduit's own REST API: 5 authors, one reader who
//! follows 4 of them and favorites every 7th article, `size` articles with 2 of 50 tags
//! each. And the database-alone ceiling for the same reads.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpStream, task::JoinSet};

use crate::{load::Outcome, sql};

pub struct Seeded {
    pub author_token: String,
    pub reader_token: String,
    pub reader_id: i64,
    /// A tag on about 1 in 25 articles.
    pub busy_tag: String,
    /// A sample of article slugs for single-article reads and favorites.
    pub slugs: Vec<String>,
}

const AUTHORS: usize = 5;
const TAGS: usize = 50;
const WRITERS: usize = 16;

pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Token {token}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)?
    })
}

/// The text of a GET (the metrics exposition).
pub async fn text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

async fn register(addr: SocketAddr, name: &str) -> anyhow::Result<String> {
    let user = call(
        addr,
        Method::POST,
        "/api/users",
        None,
        Some(json!({"user": {"username": name, "email": format!("{name}@bench.example"), "password": "benchmark"}})),
    )
    .await?;
    Ok(user["user"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

pub async fn seed(addr: SocketAddr, size: usize) -> anyhow::Result<Seeded> {
    let mut authors = Vec::new();
    for i in 0..AUTHORS {
        authors.push(register(addr, &format!("author{i}")).await?);
    }
    let reader_token = register(addr, "reader").await?;
    for i in 0..AUTHORS - 1 {
        call(
            addr,
            Method::POST,
            &format!("/api/profiles/author{i}/follow"),
            Some(&reader_token),
            None,
        )
        .await?;
    }
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let authors = authors.clone();
        let reader = reader_token.clone();
        writers.spawn(async move {
            let mut slugs = Vec::new();
            for i in (w..size).step_by(WRITERS) {
                let article = call(
                    addr,
                    Method::POST,
                    "/api/articles",
                    Some(&authors[i % AUTHORS]),
                    Some(json!({"article": {
                        "title": format!("Seeded article number {i}"),
                        "description": format!("What article {i} is about, in a sentence."),
                        "body": "Paragraphs of text, as a real article has them. ".repeat(12),
                        "tagList": [format!("tag{}", i % TAGS), format!("tag{}", (i / TAGS + 7) % TAGS)],
                    }})),
                )
                .await?;
                let slug = article["article"]["slug"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if i % 7 == 0 {
                    call(
                        addr,
                        Method::POST,
                        &format!("/api/articles/{slug}/favorite"),
                        Some(&reader),
                        None,
                    )
                    .await?;
                }
                slugs.push(slug);
            }
            anyhow::Ok(slugs)
        });
    }
    let mut slugs = Vec::new();
    while let Some(done) = writers.join_next().await {
        slugs.extend(done??);
    }
    slugs.sort();
    let step = (slugs.len() / 100).max(1);
    let sample = slugs.into_iter().step_by(step).take(100).collect();
    Ok(Seeded {
        author_token: authors[0].clone(),
        reader_id: token_subject(&reader_token)?,
        reader_token,
        busy_tag: "tag7".into(),
        slugs: sample,
    })
}

/// The mixed workload's data.
pub struct MixedSeed {
    /// One per user.
    pub tokens: Vec<String>,
    /// Every article the workload reads and favourites.
    pub slugs: Vec<String>,
    /// An article of its own for the staleness probe.
    pub probe_slug: String,
}

const MIXED_USERS: usize = 20;

/// 20 users, each following the next 4; `size` articles spread over them with 2 of 50
/// tags each; every 7th favourited by its author's follower.
pub async fn seed_mixed(addr: SocketAddr, size: usize) -> anyhow::Result<MixedSeed> {
    let mut tokens = Vec::new();
    for i in 0..MIXED_USERS {
        tokens.push(register(addr, &format!("user{i}")).await?);
    }
    for (i, token) in tokens.iter().enumerate() {
        for step in 1..=4 {
            let followee = (i + step) % MIXED_USERS;
            call(
                addr,
                Method::POST,
                &format!("/api/profiles/user{followee}/follow"),
                Some(token),
                None,
            )
            .await?;
        }
    }
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let tokens = tokens.clone();
        writers.spawn(async move {
            let mut slugs = Vec::new();
            for i in (w..size).step_by(WRITERS) {
                let article = call(
                    addr,
                    Method::POST,
                    "/api/articles",
                    Some(&tokens[i % MIXED_USERS]),
                    Some(json!({"article": {
                        "title": format!("Mixed article number {i}"),
                        "description": format!("What article {i} is about, in a sentence."),
                        "body": "Paragraphs of text, as a real article has them. ".repeat(12),
                        "tagList": [format!("tag{}", i % TAGS), format!("tag{}", (i / TAGS + 7) % TAGS)],
                    }})),
                )
                .await?;
                let slug = article["article"]["slug"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if i % 7 == 0 {
                    call(
                        addr,
                        Method::POST,
                        &format!("/api/articles/{slug}/favorite"),
                        Some(&tokens[(i + MIXED_USERS - 1) % MIXED_USERS]),
                        None,
                    )
                    .await?;
                }
                slugs.push(slug);
            }
            anyhow::Ok(slugs)
        });
    }
    let mut slugs = Vec::new();
    while let Some(done) = writers.join_next().await {
        slugs.extend(done??);
    }
    slugs.sort();
    let probe = call(
        addr,
        Method::POST,
        "/api/articles",
        Some(&tokens[1]),
        Some(json!({"article": {"title": "The staleness probe", "description": "d", "body": "b"}})),
    )
    .await?;
    Ok(MixedSeed {
        tokens,
        slugs,
        probe_slug: probe["article"]["slug"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// The user id a token names (its `sub`), for the ceiling queries.
fn token_subject(token: &str) -> anyhow::Result<i64> {
    use jsonwebtoken::{DecodingKey, Validation, decode};
    let validation = Validation::new(jsonwebtoken::Algorithm::HS256);
    let key = DecodingKey::from_secret(crate::JWT_SECRET.as_bytes());
    let data = decode::<Value>(token, &key, &validation)?;
    Ok(data.claims["sub"].as_str().unwrap_or_default().parse()?)
}

/// What Postgres alone serves for the statements conduit runs: each read's one
/// statement as conduit runs it once the list's total is cached, built by conduit's own
/// repository code and executed straight through a
/// pool of 16 connections (prepared, as sqlx caches them), no HTTP, no service; the tag
/// list is the peer's equivalent statement.
pub async fn ceiling(
    url: &str,
    reader: i64,
    tag: &str,
    slug: &str,
    duration: Duration,
) -> anyhow::Result<Vec<(&'static str, Outcome)>> {
    use conduit::modules::articles::repo::{Scope, Window, shown_statement};
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    // conduit's own connection setup (session settings included), 16 connections.
    let settings = conduit::config::DatabaseSettings {
        url: url.into(),
        max_connections: 16,
        ..Default::default()
    };
    let db = conduit::db::connect(&settings).await?;
    let pg = DbBackend::Postgres;
    // conduit reads a feed by the reader's followees (kept as the reader's follow set).
    let followees: Vec<i64> = db
        .query_all_raw(Statement::from_string(
            pg,
            format!("SELECT followee_id FROM follows WHERE follower_id = {reader}"),
        ))
        .await?
        .iter()
        .filter_map(|row| row.try_get::<i64>("", "followee_id").ok())
        .collect();
    let filtered = |tag| Scope::Filtered {
        tag,
        author: None,
        favorited_by: None,
    };
    let statements: Vec<(&'static str, Statement)> = vec![
        ("tags", Statement::from_string(pg, sql::TAGS)),
        (
            "list",
            shown_statement(
                pg,
                &filtered(None),
                Window::Offset {
                    limit: 20,
                    offset: 0,
                    with_total: false,
                },
                None,
            ),
        ),
        (
            "list-by-tag",
            shown_statement(
                pg,
                &filtered(Some(tag)),
                Window::Offset {
                    limit: 10,
                    offset: 0,
                    with_total: false,
                },
                None,
            ),
        ),
        (
            "feed",
            shown_statement(
                pg,
                &Scope::AuthorsIn(&followees),
                Window::Offset {
                    limit: 20,
                    offset: 0,
                    with_total: false,
                },
                Some(reader),
            ),
        ),
        (
            "article",
            shown_statement(pg, &Scope::Slug(slug), Window::One, None),
        ),
    ];
    let mut results = Vec::new();
    for (scenario, statement) in statements {
        let mut clients = JoinSet::new();
        let start = Instant::now() + Duration::from_secs(1);
        let end = start + duration;
        for _ in 0..16 {
            let db = db.clone();
            let statement = statement.clone();
            clients.spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let answered = db.query_all_raw(statement.clone()).await;
                    let done = Instant::now();
                    if began >= start {
                        latencies.push(done.duration_since(began).as_micros() as u32);
                        errors += u64::from(answered.is_err());
                    }
                }
                (latencies, errors)
            });
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        while let Some(done) = clients.join_next().await {
            let (l, e) = done?;
            latencies.extend(l);
            errors += e;
        }
        results.push((scenario, Outcome::of(latencies, errors, duration)));
    }
    db.close().await?;
    Ok(results)
}
