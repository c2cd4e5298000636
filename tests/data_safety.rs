//! Data safety under the traffic production sees: clients that give up mid-request, and
//! several clients acting on one row at once. Each test reproduces a failure seen against
//! the real server (issue 7) and states the invariant that must hold instead, on SQLite and
//! (with `CONDUIT_TEST_DATABASE_URL`) on Postgres.

mod common;

use std::time::Duration;

use common::{Rest, TestServer, grpc_request, token_header, unique};
use conduit::proto::conduit::v1::{
    self as pb, article_service_client::ArticleServiceClient,
    comment_service_client::CommentServiceClient, tag_service_client::TagServiceClient,
};
use futures_util::future::join_all;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Connections of the server's own database that sit inside a transaction with nothing
/// running: a connection returned to the pool mid-transaction stays like this forever.
/// Waits for in-flight work to finish first (a guard against hanging, not a timing check).
async fn idle_in_transaction(server: &TestServer) -> i64 {
    let Some(admin_url) = std::env::var("CONDUIT_TEST_DATABASE_URL").ok() else {
        return 0;
    };
    let db_name = server
        .db
        .url
        .rsplit('/')
        .next()
        .expect("db name")
        .to_string();
    count_until_zero(
        &admin_url,
        &format!(
            "SELECT count(*)::bigint AS n FROM pg_stat_activity \
             WHERE datname = '{db_name}' AND state LIKE 'idle in transaction%'"
        ),
    )
    .await
}

/// Runs a `SELECT count(*) AS n` until it says 0 (about 5 s at most); its last answer.
async fn count_until_zero(url: &str, sql: &str) -> i64 {
    let db = Database::connect(url).await.expect("connect");
    let mut count = -1;
    for _ in 0..50 {
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .expect("count")
            .expect("row");
        count = row.try_get::<i64>("", "n").expect("n");
        if count == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.close().await.ok();
    count
}

/// Requests abandoned at every stage — client timeouts from 0 to ~25 ms, connections
/// closed after the request line, HTTP/2 streams reset, gRPC deadlines — must leave no
/// pooled connection inside a transaction, and every later request must succeed.
// Multi-threaded: the relay must keep running while the harness waits for the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_never_poison_the_pool() {
    // On Postgres the database sits behind a relay that adds a millisecond each way, so
    // abandoned requests land inside BEGIN, statements and COMMIT alike.
    let db = common::TestDb::new().await;
    let relayed = match db.postgres_addr() {
        Some(target) => {
            let relay = common::latency_proxy(target, Duration::from_millis(1)).await;
            db.url_via(relay)
        }
        None => None,
    };
    let mut env = vec![("CONDUIT__DATABASE__MAX_CONNECTIONS", "3")];
    if let Some(url) = relayed.as_deref() {
        env.push(("CONDUIT__DATABASE__URL", url));
    }
    let server = TestServer::start_on(db, &env).await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("writer")).await;
    for i in 0..12 {
        rest.publish(&token, &format!("Article {i}"), &["t1", "t2"])
            .await;
    }

    let paths = [
        "/api/articles?limit=20",
        "/api/tags",
        "/api/articles?tag=t1",
        "/api/articles/feed",
    ];
    for round in 0..15u64 {
        // HTTP/1.1 and h2c clients that give up after a few milliseconds.
        let h1 = reqwest::Client::new();
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .expect("h2 client");
        let calls = (0..80u64).map(|i| {
            let client = if i % 2 == 0 { h1.clone() } else { h2.clone() };
            let url = server.url(paths[(i % paths.len() as u64) as usize]);
            let token = token.clone();
            let wait = Duration::from_micros((i * 317 + round * 1_013) % 25_000);
            async move {
                let _ = client
                    .get(url)
                    .header("authorization", token_header(&token))
                    .timeout(wait)
                    .send()
                    .await;
            }
        });
        // Writes abandoned mid-flight too.
        let writes = (0..16u64).map(|i| {
            let client = h1.clone();
            let url = server.url("/api/articles");
            let token = token.clone();
            let wait = Duration::from_micros((i * 977 + round * 331) % 30_000);
            async move {
                let _ = client
                    .post(url)
                    .header("authorization", token_header(&token))
                    .json(&json!({"article": {"title": format!("Abandoned {round} {i}"), "description": "d", "body": "b", "tagList": ["t3"]}}))
                    .timeout(wait)
                    .send()
                    .await;
            }
        });
        // gRPC calls whose deadline passes while the server works.
        let channel = server.channel().await;
        let grpc = (0..24u64).map(|i| {
            let mut tags = TagServiceClient::new(channel.clone());
            let mut articles = ArticleServiceClient::new(channel.clone());
            let wait = Duration::from_micros((i * 709 + round * 97) % 20_000 + 1);
            async move {
                if i % 2 == 0 {
                    let mut request = tonic::Request::new(pb::ListTagsRequest {});
                    request.set_timeout(wait);
                    let _ = tags.list_tags(request).await;
                } else {
                    let mut request = tonic::Request::new(pb::ListArticlesRequest {
                        page_size: 20,
                        ..Default::default()
                    });
                    request.set_timeout(wait);
                    let _ = articles.list_articles(request).await;
                }
            }
        });
        // Raw connections that send a request and close before the answer.
        let raw = (0..8).map(|_| async {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(server.addr).await {
                let _ = stream
                    .write_all(b"GET /api/articles?limit=20 HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await;
            }
        });
        tokio::join!(
            join_all(calls),
            join_all(writes),
            join_all(grpc),
            join_all(raw)
        );
        // Few at a time, so requests are cancelled while they hold a connection rather
        // than while they queue for one.
        for wave in 0..30u64 {
            let calls = (0..6u64).map(|i| {
                let client = h2.clone();
                let url = server.url(paths[((i + wave) % paths.len() as u64) as usize]);
                let token = token.clone();
                let wait = Duration::from_micros((wave * 6 + i) * 173 % 12_000 + 500);
                async move {
                    let _ = client
                        .get(url)
                        .header("authorization", token_header(&token))
                        .timeout(wait)
                        .send()
                        .await;
                }
            });
            join_all(calls).await;
        }
    }

    assert_eq!(
        idle_in_transaction(&server).await,
        0,
        "a pooled connection was left inside a transaction"
    );
    for path in paths.iter().cycle().take(24) {
        let (status, body) = rest.get(path, Some(&token)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{path} after abandoned requests: {body}"
        );
    }
    // Every article a client created is complete: its tags came with it.
    let (_, body) = rest.get("/api/articles?limit=100", None).await;
    for article in body["articles"].as_array().expect("articles") {
        let tags = article["tagList"].as_array().expect("tags");
        assert!(!tags.is_empty(), "article without its tags: {article}");
    }
    let (status, _) = rest
        .post(
            "/api/articles",
            Some(&token),
            json!({"article": {"title": "After", "description": "d", "body": "b"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

fn assert_no_server_error(results: &[(StatusCode, Value)]) {
    for (status, body) in results {
        assert!(!status.is_server_error(), "{status}: {body}");
    }
}

/// Ten concurrent renames of one article: one wins, the others find the slug gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_renames_one_wins() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("author")).await;
    for round in 0..3 {
        let slug = rest.publish(&token, &unique("Original "), &[]).await;
        let path = format!("/api/articles/{slug}");
        let renames = (0..10).map(|i| {
            let body = json!({"article": {"title": format!("Renamed {round} {i} {}", unique(""))}});
            rest.put(&path, Some(&token), body)
        });
        let results = join_all(renames).await;
        assert_no_server_error(&results);
        let winners: Vec<_> = results
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::NOT_FOUND),
            "{results:?}"
        );
        let new_slug = winners[0].1["article"]["slug"].as_str().expect("slug");
        let (status, body) = rest.get(&format!("/api/articles/{new_slug}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["article"]["title"], winners[0].1["article"]["title"]);
        assert_eq!(rest.get(&path, None).await.0, StatusCode::NOT_FOUND);
    }
}

/// Of two concurrent deletes of one article (or one comment), one is 204 and one 404,
/// over REST and over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_one_wins() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("author")).await;
    for _ in 0..10 {
        let slug = rest.publish(&token, "Twice deleted", &["x"]).await;
        let path = format!("/api/articles/{slug}");
        let (first, second) = tokio::join!(
            rest.delete(&path, Some(&token)),
            rest.delete(&path, Some(&token))
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
            "{first:?} {second:?}"
        );
    }
    let slug = rest.publish(&token, "Commented", &[]).await;
    for _ in 0..10 {
        let comment = rest.comment(&token, &slug, "soon gone").await;
        let path = format!("/api/articles/{slug}/comments/{}", comment["id"]);
        let (first, second) = tokio::join!(
            rest.delete(&path, Some(&token)),
            rest.delete(&path, Some(&token))
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
            "{first:?} {second:?}"
        );
    }

    let channel = server.channel().await;
    for _ in 0..10 {
        let slug = rest.publish(&token, "Twice deleted over gRPC", &[]).await;
        let call = || {
            let mut client = ArticleServiceClient::new(channel.clone());
            let request = grpc_request(
                pb::DeleteArticleRequest { slug: slug.clone() },
                Some(&token),
            );
            async move {
                client
                    .delete_article(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            }
        };
        let (first, second) = tokio::join!(call(), call());
        let mut outcomes = [first, second];
        outcomes.sort_by_key(|o| o.is_err());
        assert_eq!(outcomes, [Ok(()), Err(tonic::Code::NotFound)]);
    }
}

/// Deleting an article while its tags are replaced: one lock order, so no deadlock and no
/// 5xx; a delete that answered 204 really deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_tag_update_never_fails() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("author")).await;
    for i in 0..20 {
        let slug = rest.publish(&token, "Contested", &["a", "b", "c"]).await;
        let path = format!("/api/articles/{slug}");
        let tags = json!({"article": {"tagList": [format!("n{i}"), "b", "z"], "body": "new"}});
        let (deleted, updated) = tokio::join!(
            rest.delete(&path, Some(&token)),
            rest.put(&path, Some(&token), tags)
        );
        assert_no_server_error(&[deleted.clone(), updated.clone()]);
        assert_eq!(deleted.0, StatusCode::NO_CONTENT, "{deleted:?}");
        assert!(
            updated.0 == StatusCode::OK || updated.0 == StatusCode::NOT_FOUND,
            "{updated:?}"
        );
        assert_eq!(rest.get(&path, None).await.0, StatusCode::NOT_FOUND);
    }
    let channel = server.channel().await;
    for i in 0..10 {
        let slug = rest
            .publish(&token, "Contested over gRPC", &["a", "b"])
            .await;
        let mut deleter = ArticleServiceClient::new(channel.clone());
        let mut updater = ArticleServiceClient::new(channel.clone());
        let delete = grpc_request(
            pb::DeleteArticleRequest { slug: slug.clone() },
            Some(&token),
        );
        let update = grpc_request(
            pb::UpdateArticleRequest {
                slug: slug.clone(),
                article: Some(pb::Article {
                    tag_list: vec![format!("g{i}"), "a".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            Some(&token),
        );
        let (deleted, updated) = tokio::join!(
            deleter.delete_article(delete),
            updater.update_article(update)
        );
        assert!(deleted.is_ok(), "{deleted:?}");
        if let Err(status) = updated {
            assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        }
    }
}

/// Every favorite answers `favorited: true` with a count that includes it, every
/// unfavorite `false`, however other readers favorite the same article meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn favorite_answers_show_their_own_write() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let author = rest.register(&unique("author")).await;
    let slug = rest.publish(&author, "Popular", &[]).await;
    let mut readers = Vec::new();
    for _ in 0..8 {
        readers.push(rest.register(&unique("reader")).await);
    }
    let path = format!("/api/articles/{slug}/favorite");
    let rounds = readers.iter().map(|token| {
        let (rest, path) = (&rest, &path);
        async move {
            let mut answers = Vec::new();
            for _ in 0..4 {
                answers.push((true, rest.post(path, Some(token), json!({})).await));
                answers.push((false, rest.delete(path, Some(token)).await));
            }
            answers
        }
    });
    for (favorite, (status, body)) in join_all(rounds).await.into_iter().flatten() {
        assert_eq!(status, StatusCode::OK, "{body}");
        let article = &body["article"];
        assert_eq!(article["favorited"], favorite, "{body}");
        let count = article["favoritesCount"].as_i64().expect("count");
        if favorite {
            assert!((1..=8).contains(&count), "{body}");
        } else {
            assert!((0..=7).contains(&count), "{body}");
        }
    }
}

/// Concurrent updates with tags: each answer shows its own description with its own tags,
/// readers never see one update's description with another's tags, and `updatedAt` never
/// goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_answer_their_own_state() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("author")).await;
    let slug = rest.publish(&token, "Edited a lot", &["t"]).await;
    let path = format!("/api/articles/{slug}");
    let updates = (0..12).map(|i| {
        let body =
            json!({"article": {"description": format!("d{i}"), "tagList": [format!("t{i}")]}});
        rest.put(&path, Some(&token), body)
    });
    let reads = (0..12).map(|_| rest.get(&path, None));
    let (updated, read) = tokio::join!(join_all(updates), join_all(reads));
    let consistent = |article: &Value| {
        let description = article["description"].as_str().expect("description");
        let tags = article["tagList"].as_array().expect("tags");
        let expected = format!("t{}", description.trim_start_matches('d'));
        tags.len() == 1 && tags[0].as_str() == Some(expected.as_str())
    };
    let mut latest = String::new();
    for (i, (status, body)) in updated.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["article"]["description"], format!("d{i}"), "{body}");
        assert_eq!(
            body["article"]["tagList"],
            json!([format!("t{i}")]),
            "{body}"
        );
        latest = latest.max(
            body["article"]["updatedAt"]
                .as_str()
                .expect("updatedAt")
                .to_string(),
        );
    }
    for (status, body) in &read {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert!(consistent(&body["article"]), "{body}");
    }
    let (_, last) = rest.get(&path, None).await;
    assert!(consistent(&last["article"]), "{last}");
    assert!(
        last["article"]["updatedAt"].as_str().expect("updatedAt") >= latest.as_str(),
        "updatedAt went backwards: {last} < {latest}"
    );
}

/// Control characters are refused (or not found, for lookups) on both databases; names
/// and tags compare in NFC; an invisible-only name is blank.
#[tokio::test]
async fn text_hygiene() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let name = unique("hygiene");
    let token = rest.register(&name).await;

    for (user, field) in [
        (
            json!({"username": "a\u{0}b", "email": "nul@example.com", "password": "password123"}),
            "username",
        ),
        (
            json!({"username": unique("ok"), "email": "n\u{0}ul@example.com", "password": "password123"}),
            "email",
        ),
        (
            json!({"username": unique("ok"), "email": "nul2@example.com", "password": "pass\u{0}word123"}),
            "password",
        ),
        (
            json!({"username": "\u{200b}\u{200d}", "email": "zw@example.com", "password": "password123"}),
            "username",
        ),
    ] {
        let (status, body) = rest.post("/api/users", None, json!({"user": user})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["errors"][field].is_array(), "{field}: {body}");
    }
    let (status, body) = rest
        .post(
            "/api/users/login",
            None,
            json!({"user": {"email": "x\u{0}@example.com", "password": "password123"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    for (field, article) in [
        (
            "title",
            json!({"title": "a\u{0}", "description": "d", "body": "b"}),
        ),
        (
            "description",
            json!({"title": "t", "description": "d\u{0}", "body": "b"}),
        ),
        (
            "body",
            json!({"title": "t", "description": "d", "body": "b\u{0}"}),
        ),
        (
            "tagList",
            json!({"title": "t", "description": "d", "body": "b", "tagList": ["x\u{0}"]}),
        ),
    ] {
        let (status, body) = rest
            .post("/api/articles", Some(&token), json!({"article": article}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["errors"][field].is_array(), "{field}: {body}");
    }
    let (status, body) = rest
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"bio": "bell\u{7}"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Free text keeps its line breaks and tabs.
    let (status, body) = rest
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"bio": "two\nlines\tand a tab"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let slug = rest
        .publish(
            &token,
            "Caf\u{e9} culture",
            &["cafe\u{301}", " caf\u{e9} ", "x"],
        )
        .await;
    let (status, body) = rest
        .post(
            &format!("/api/articles/{slug}/comments"),
            Some(&token),
            json!({"comment": {"body": "\u{0}"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    for path in [
        "/api/profiles/a%00b",
        "/api/articles/a%00b",
        "/api/articles/a%00b/comments",
    ] {
        let (status, body) = rest.get(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    for query in ["tag", "author", "favorited"] {
        let (status, body) = rest
            .get(&format!("/api/articles?{query}=a%00b"), None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert!(body["errors"][query].is_array(), "{body}");
    }

    // NFC: the two spellings of "café" are one tag, found by either spelling, trimmed.
    let (_, body) = rest.get(&format!("/api/articles/{slug}"), None).await;
    assert_eq!(
        body["article"]["tagList"],
        json!(["caf\u{e9}", "x"]),
        "{body}"
    );
    for filter in ["caf%C3%A9", "cafe%CC%81", "%20caf%C3%A9%20"] {
        let (status, body) = rest.get(&format!("/api/articles?tag={filter}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["articlesCount"], 1, "{filter}: {body}");
    }
    // NFC: one username whichever way it is spelled.
    let base = unique("jos");
    rest.register(&format!("{base}\u{e9}")).await;
    let (status, body) = rest
        .post("/api/users", None, json!({"user": {"username": format!("{base}e\u{301}"), "email": format!("{base}-2@example.com"), "password": "password123"}}))
        .await;
    assert!(status.is_client_error(), "{status}: {body}");
    assert!(body["errors"]["username"].is_array(), "{body}");
    let (status, body) = rest
        .get(&format!("/api/profiles/{base}e%CC%81"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["profile"]["username"], format!("{base}\u{e9}"));

    // gRPC: the same rules through the same service layer.
    let channel = server.channel().await;
    let mut articles = ArticleServiceClient::new(channel.clone());
    let status = articles
        .list_articles(pb::ListArticlesRequest {
            tag: Some("a\u{0}b".into()),
            ..Default::default()
        })
        .await
        .expect_err("control character in a filter");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = articles
        .get_article(pb::GetArticleRequest {
            slug: "a\u{0}b".into(),
        })
        .await
        .expect_err("control character in a slug");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let mut comments = CommentServiceClient::new(channel);
    let status = comments
        .add_comment(grpc_request(
            pb::AddCommentRequest {
                slug: slug.clone(),
                body: "\u{0}".into(),
            },
            Some(&token),
        ))
        .await
        .expect_err("control character in a body");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

async fn keyed_post(
    server: &TestServer,
    path: &str,
    token: &str,
    key: &str,
    body: Value,
) -> (StatusCode, bool, Value) {
    let response = reqwest::Client::new()
        .post(server.url(path))
        .header("authorization", token_header(token))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, replayed, body)
}

async fn titled(rest: &Rest, author: &str, title: &str) -> usize {
    let (_, body) = rest
        .get(&format!("/api/articles?author={author}&limit=100"), None)
        .await;
    body["articles"]
        .as_array()
        .expect("articles")
        .iter()
        .filter(|a| a["title"] == title)
        .count()
}

fn article(title: &str) -> Value {
    json!({"article": {"title": title, "description": "d", "body": "b", "tagList": ["k"]}})
}

/// A retry with the same `Idempotency-Key` gets the first answer and writes nothing;
/// another body is refused; concurrent twins never both write; abandoned first attempts
/// are still answered to their retry; keys expire and are purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_make_retries_safe() {
    let server = TestServer::start_with(&[
        ("CONDUIT__IDEMPOTENCY__TTL", "2s"),
        ("CONDUIT__IDEMPOTENCY__PURGE_INTERVAL", "1s"),
    ])
    .await;
    let rest = Rest::new(&server);
    let name = unique("keyed");
    let token = rest.register(&name).await;

    let (status, replayed, first) =
        keyed_post(&server, "/api/articles", &token, "k1", article("Once")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{first}");
    let (status, replayed, again) =
        keyed_post(&server, "/api/articles", &token, "k1", article("Once")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true), "{again}");
    assert_eq!(again, first);
    assert_eq!(titled(&rest, &name, "Once").await, 1);

    let (status, _, body) =
        keyed_post(&server, "/api/articles", &token, "k1", article("Other")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["errors"]["Idempotency-Key"].is_array(), "{body}");
    assert_eq!(titled(&rest, &name, "Other").await, 0);

    // Keys belong to their caller.
    let other = rest.register(&unique("other")).await;
    let (status, replayed, _) =
        keyed_post(&server, "/api/articles", &other, "k1", article("Once")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));

    let (status, _, body) = keyed_post(
        &server,
        "/api/articles",
        &token,
        &"x".repeat(300),
        article("Long key"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Eight concurrent twins: one write; the others replay it or are told to retry.
    let twins = (0..8).map(|_| keyed_post(&server, "/api/articles", &token, "k2", article("Twin")));
    let answers = join_all(twins).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty(), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, _, _)| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{answers:?}"
    );
    assert!(
        created.iter().all(|(_, _, body)| *body == created[0].2),
        "{answers:?}"
    );
    assert_eq!(titled(&rest, &name, "Twin").await, 1);

    // A first attempt abandoned by its client still completes; the retry gets its answer.
    for i in 0..8u64 {
        let title = format!("Abandoned {i}");
        let key = format!("k-abandoned-{i}");
        let _ = reqwest::Client::new()
            .post(server.url("/api/articles"))
            .header("authorization", token_header(&token))
            .header("idempotency-key", &key)
            .json(&article(&title))
            .timeout(Duration::from_micros(500 + i * 700))
            .send()
            .await;
        let mut outcome = keyed_post(&server, "/api/articles", &token, &key, article(&title)).await;
        for _ in 0..100 {
            if outcome.0 != StatusCode::CONFLICT {
                break;
            }
            // Still running: the retry contract says try again.
            tokio::time::sleep(Duration::from_millis(20)).await;
            outcome = keyed_post(&server, "/api/articles", &token, &key, article(&title)).await;
        }
        assert_eq!(outcome.0, StatusCode::CREATED, "{outcome:?}");
        assert_eq!(titled(&rest, &name, &title).await, 1, "{title}");
    }

    // gRPC: the same contract through metadata; gRPC-Web shares the stored answer.
    let channel = server.channel().await;
    let create = |title: &str, key: &str| {
        let mut request = grpc_request(
            pb::CreateArticleRequest {
                title: title.into(),
                description: "d".into(),
                body: "b".into(),
                tag_list: vec![],
            },
            Some(&token),
        );
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().expect("metadata"));
        let mut client = ArticleServiceClient::new(channel.clone());
        async move { client.create_article(request).await }
    };
    let first = create("Over gRPC", "g1").await.expect("first");
    let again = create("Over gRPC", "g1").await.expect("replay");
    assert!(again.metadata().get("idempotent-replayed").is_some());
    assert_eq!(again.into_inner(), first.into_inner());
    assert_eq!(titled(&rest, &name, "Over gRPC").await, 1);
    let status = create("Else over gRPC", "g1")
        .await
        .expect_err("other body");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Expiry: after the TTL the key is purged and free for a new request.
    let mut purged = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, replayed, _) = keyed_post(
            &server,
            "/api/articles",
            &token,
            "k1",
            article("After expiry"),
        )
        .await;
        if status == StatusCode::CREATED && !replayed {
            purged = true;
            break;
        }
    }
    assert!(purged, "key k1 never expired");
    // ...and the purge job deletes expired keys nobody reuses.
    let left = count_until_zero(
        &server.db.url,
        "SELECT count(*) AS n FROM idempotency_keys WHERE key = 'k2'",
    )
    .await;
    assert_eq!(left, 0, "expired key k2 was not purged");
    assert_eq!(titled(&rest, &name, "After expiry").await, 1);
    assert!(
        server.logs().iter().all(|l| l["level"] != "ERROR"),
        "errors logged"
    );
}
