//! What operators rely on: leased jobs across replicas, feature flags, deprecated routes,
//! load shedding.

mod common;

use std::time::{Duration, Instant};

use common::{Rest, TestDb, TestServer, unique};
use reqwest::StatusCode;
use serde_json::Value;

/// `conduit_job_runs_total{job_name="cleanup",outcome=…}` on one server.
async fn cleanup_runs(server: &TestServer) -> (u64, u64, u64) {
    let text = server.metrics().await;
    let count = |outcome: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("conduit_job_runs_total{")
                    && l.contains("job_name=\"cleanup\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (count("ok"), count("skipped"), count("error"))
}

/// Three replicas on one database, cleanup every second: the job runs about once per
/// second in all, never once per replica, and a replica that stops leaves the job to
/// the others.
#[tokio::test]
async fn the_cleanup_job_runs_once_per_interval_across_replicas() {
    let db = TestDb::new().await;
    let env = [("CONDUIT__JOBS__CLEANUP_INTERVAL", "1s")];
    let started = Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(TestServer::start_on(db.share(), &env).await);
    }
    // Some ended work for it to do: a session, logged out.
    let rest = Rest::new(&replicas[0]);
    let token = rest.register(&unique("job")).await;
    rest.logout(&token).await;

    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut totals = (0, 0, 0);
    for replica in &replicas {
        let (ok, skipped, error) = cleanup_runs(replica).await;
        totals = (totals.0 + ok, totals.1 + skipped, totals.2 + error);
    }
    let elapsed = started.elapsed().as_secs();
    let (ok, skipped, error) = totals;
    assert_eq!(error, 0);
    assert!(ok >= 2, "the job ran: {totals:?}");
    // Exclusivity, not speed: without the lease each of the three would run every tick.
    assert!(
        ok <= elapsed + 1,
        "at most one run per interval across replicas: {ok} runs in {elapsed}s ({totals:?})"
    );
    assert!(skipped > 0, "the other replicas skipped: {totals:?}");

    // The ended session is gone.
    let conn = sea_orm::Database::connect(&db.url).await.expect("db");
    use sea_orm::{ConnectionTrait, Statement};
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT COUNT(*) AS n FROM sessions",
        ))
        .await
        .expect("count")
        .expect("row");
    assert_eq!(row.try_get::<i64>("", "n").expect("n"), 0);

    // One replica gone: the others carry on.
    let survivor_before = cleanup_runs(&replicas[2]).await.0 + cleanup_runs(&replicas[1]).await.0;
    replicas.remove(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let survivor_after = cleanup_runs(&replicas[1]).await.0 + cleanup_runs(&replicas[0]).await.0;
    assert!(survivor_after > survivor_before, "the job went on");
}

#[tokio::test]
async fn a_disabled_module_is_gone_from_routes_docs_reflection_and_health() {
    let server = TestServer::start_with(&[
        ("CONDUIT__FEATURES__COMMENTS", "false"),
        ("CONDUIT__FEATURES__LEGACY_FEED", "false"),
    ])
    .await;
    let rest = Rest::new(&server);
    let (status, body) = rest.get("/api/articles/some-slug/comments", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let token = rest.register(&unique("flag")).await;
    let (status, _) = rest.get("/api/feed", Some(&token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, document) = rest.get("/api/openapi.json", None).await;
    let paths = document["paths"].as_object().expect("paths");
    assert!(!paths.keys().any(|p| p.contains("comments")), "{paths:?}");
    assert!(!paths.contains_key("/api/feed"));
    assert!(paths.contains_key("/api/articles"), "others stay");

    let channel = server.channel().await;
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            channel.clone(),
        );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let listed = responses
        .message()
        .await
        .expect("message")
        .expect("response");
    let names: Vec<String> = match listed.message_response {
        Some(
            tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
                list,
            ),
        ) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("{other:?}"),
    };
    assert!(
        !names.iter().any(|n| n == "conduit.v1.CommentService"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "conduit.v1.ArticleService"),
        "{names:?}"
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "conduit.v1.CommentService".into(),
        })
        .await
        .expect_err("unknown to health");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status =
        conduit::proto::conduit::v1::comment_service_client::CommentServiceClient::new(channel)
            .list_comments(conduit::proto::conduit::v1::ListCommentsRequest {
                slug: "x".into(),
                ..Default::default()
            })
            .await
            .expect_err("gone");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn a_module_without_what_it_needs_is_refused_at_startup() {
    let db = TestDb::new().await;
    let output = common::run_cli(
        &["config", "check"],
        &[
            ("CONDUIT__FEATURES__ARTICLES", "false"),
            ("CONDUIT__FEATURES__LEGACY_FEED", "false"),
        ],
        &db.url,
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("features.comments"), "{stderr}");
}

#[tokio::test]
async fn the_legacy_feed_answers_with_deprecation_and_sunset() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("old")).await;
    let response = server
        .http()
        .get(server.url("/api/feed?limit=5"))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["articlesCount"], 0, "answers like the feed: {body}");
    assert_eq!(headers["deprecation"], "@1795996800");
    assert_eq!(headers["sunset"], "Wed, 30 Jun 2027 00:00:00 GMT");
    assert_eq!(
        headers["link"],
        "</api/articles/feed>; rel=\"successor-version\""
    );
    let (status, _) = rest.get("/api/feed", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the policy covers it too");
    let (_, document) = rest.get("/api/openapi.json", None).await;
    assert_eq!(document["paths"]["/api/feed"]["get"]["deprecated"], true);
}

/// Two requests whose bodies never finish hold both places; the next is refused at once
/// on either protocol, while probes, metrics and gRPC health still answer.
#[tokio::test]
async fn past_the_concurrency_limit_requests_are_shed_but_probes_are_not() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(&[("CONDUIT__SERVER__CONCURRENCY_LIMIT", "2")]).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        stream
            .write_all(
                b"POST /api/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
            )
            .await
            .expect("write");
        stalled.push(stream);
    }
    let rest = Rest::new(&server);
    // The stalled requests take their places as soon as their headers are read; until
    // then a request here may still get through, so ask until one is refused (a guard
    // against a hang, not a timing expectation).
    let mut refused = None;
    for _ in 0..100 {
        let response = server
            .http()
            .get(server.url("/api/tags"))
            .send()
            .await
            .expect("send");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("shed once both places are taken");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"errors": {"request": ["overloaded; retry shortly"]}})
    );

    let channel = server.channel().await;
    let status =
        conduit::proto::conduit::v1::tag_service_client::TagServiceClient::new(channel.clone())
            .list_tags(conduit::proto::conduit::v1::ListTagsRequest {})
            .await
            .expect_err("shed");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    for path in ["/livez", "/readyz", "/metrics"] {
        let status = reqwest::get(server.url(path))
            .await
            .expect("probe")
            .status();
        assert_eq!(status, StatusCode::OK, "{path} is never shed");
    }
    let serving = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is never shed")
        .into_inner()
        .status;
    assert_eq!(serving, 1);
    let metrics = server.metrics().await;
    assert!(metrics.contains("conduit_requests_shed_total"), "counted");

    // Places free up when the stalled requests end.
    drop(stalled);
    let mut served = false;
    for _ in 0..100 {
        if rest.get("/api/tags", None).await.0 == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "served again");
}

/// `kill -9` in the middle of concurrent writes: every write that was acknowledged is
/// there after a restart, and no article is left half made (each has exactly the tags
/// it was created with; favorites and comments point at articles that exist).
#[tokio::test]
async fn kill_9_mid_write_leaves_no_partial_article() {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    let db = TestDb::new().await;
    let server = TestServer::start_on(db.share(), &[]).await;
    let rest = Rest::new(&server);
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(rest.register(&unique("crash")).await);
    }
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        let http = reqwest::Client::new();
        let base = server.url("");
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let article = serde_json::json!({"article": {
                    "title": format!("crash {i} {n} {}", unique("")),
                    "description": "d",
                    "body": "b",
                    "tagList": [format!("t{i}a"), format!("t{i}b"), format!("t{n}c")],
                }});
                let Ok(response) = http
                    .post(format!("{base}/api/articles"))
                    .header("authorization", format!("Token {token}"))
                    .json(&article)
                    .send()
                    .await
                else {
                    break; // the server is gone
                };
                if response.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                let slug = body["article"]["slug"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                acknowledged.lock().expect("slugs").push(slug.clone());
                // Favorite and comment on it; these may be cut off at any point.
                let _ = http
                    .post(format!("{base}/api/articles/{slug}/favorite"))
                    .header("authorization", format!("Token {token}"))
                    .send()
                    .await;
                let _ = http
                    .post(format!("{base}/api/articles/{slug}/comments"))
                    .header("authorization", format!("Token {token}"))
                    .json(&serde_json::json!({"comment": {"body": "c"}}))
                    .send()
                    .await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }
    drop(server);

    let acknowledged = acknowledged.lock().expect("slugs").clone();
    assert!(
        acknowledged.len() >= 4,
        "writes were under way: {}",
        acknowledged.len()
    );
    let restarted = TestServer::start_on(db.share(), &[]).await;
    let rest = Rest::new(&restarted);
    for slug in &acknowledged {
        let (status, body) = rest.get(&format!("/api/articles/{slug}"), None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged {slug} is there: {body}"
        );
        assert_eq!(
            body["article"]["tagList"].as_array().map(Vec::len),
            Some(3),
            "{body}"
        );
    }
    use sea_orm::{ConnectionTrait, Statement};
    let conn = sea_orm::Database::connect(&db.url).await.expect("db");
    let count = |sql: &'static str| {
        let conn = &conn;
        async move {
            conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
                .await
                .expect("query")
                .expect("row")
                .try_get::<i64>("", "n")
                .expect("n")
        }
    };
    assert_eq!(
        count(
            "SELECT COUNT(*) AS n FROM articles a WHERE (SELECT COUNT(*) FROM article_tags t WHERE t.article_id = a.id) <> 3"
        )
        .await,
        0,
        "every article has all its tags"
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM article_tags t WHERE NOT EXISTS (SELECT 1 FROM articles a WHERE a.id = t.article_id)").await,
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM favorites f WHERE NOT EXISTS (SELECT 1 FROM articles a WHERE a.id = f.article_id)").await,
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM comments c WHERE NOT EXISTS (SELECT 1 FROM articles a WHERE a.id = c.article_id)").await,
        0
    );
    let (status, _) = rest.get("/api/articles?limit=100", None).await;
    assert_eq!(status, StatusCode::OK, "the restarted server serves");
}
