//! Every request is visible the same way whatever its protocol: Prometheus metrics with
//! real gRPC codes and route templates, OpenTelemetry spans that continue the caller's
//! trace (checked with a real OTLP receiver), JSON logs with trace and request ids, and
//! error tracking of internal errors (checked with a fake Sentry ingest endpoint).

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Collector, Rest, TestServer, grpc_frame, grpc_request, unique};
use conduit::proto::conduit::v1::{self as pb, article_service_client::ArticleServiceClient};
use opentelemetry_proto::tonic::{
    common::v1::any_value::Value as AnyValue,
    trace::v1::{Span, span::SpanKind},
};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tonic::Code;

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.expect("text")
}

fn series<'a>(metrics: &'a str, name: &str) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .collect()
}

#[tokio::test]
async fn metrics_see_grpc_codes_and_route_templates() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let token = api.register(&unique("metrics")).await;

    let mut articles = ArticleServiceClient::new(server.channel().await);
    let status = articles
        .get_article(pb::GetArticleRequest {
            slug: "no-such-article".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
    articles
        .list_articles(grpc_request(
            pb::ListArticlesRequest::default(),
            Some(&token),
        ))
        .await
        .expect("list");
    assert_eq!(
        api.get("/api/articles/some-raw-slug", None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/api/profiles/someone-else", None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/random/path/xyz", None).await.0,
        StatusCode::NOT_FOUND
    );
    // Probes and the scrape itself are not API traffic.
    assert_eq!(api.get("/readyz", None).await.0, StatusCode::OK);

    let metrics = scrape(&server.url("/metrics")).await;
    let requests = series(&metrics, "http_server_requests_total");
    let has = |needle: &str| requests.iter().any(|l| l.contains(needle));
    assert!(
        has(
            r#"protocol="grpc",operation="conduit.v1.ArticleService/GetArticle",outcome="NOT_FOUND"} 1"#
        ),
        "a failed call is counted under its real code: {requests:#?}"
    );
    assert!(has(
        r#"protocol="grpc",operation="conduit.v1.ArticleService/ListArticles",outcome="OK"} 1"#
    ));
    assert!(has(
        r#"protocol="http",operation="POST /api/users",outcome="201"} 1"#
    ));
    assert!(has(
        r#"protocol="http",operation="GET /api/articles/{slug}",outcome="404"} 1"#
    ));
    assert!(has(
        r#"protocol="http",operation="GET /api/profiles/{username}",outcome="404"} 1"#
    ));
    assert!(has(
        r#"protocol="http",operation="GET unmatched",outcome="404"} 1"#
    ));
    assert!(
        !metrics.contains("some-raw-slug") && !metrics.contains("xyz"),
        "raw paths never become labels"
    );
    assert!(
        !metrics.contains("readyz")
            && !metrics.contains("/metrics")
            && !metrics.contains("grpc.health")
    );

    let histogram = series(&metrics, "http_server_request_duration_seconds_bucket");
    assert!(
        histogram.iter().any(
            |l| l.contains(r#"operation="conduit.v1.ArticleService/GetArticle""#)
                && l.contains(r#"le="+Inf""#)
        ),
        "latency is a histogram with buckets: {histogram:#?}"
    );
    for name in [
        "http_server_active_requests{protocol=\"grpc\"}",
        "db_client_connections_usage{state=\"idle\"}",
        "db_client_connections_max",
        "conduit_job_runs_total{job_name=\"database-watch\",outcome=\"ok\"}",
        "conduit_build_info{version=",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn metrics_can_move_to_an_admin_port() {
    let server = TestServer::start_with(&[("CONDUIT__SERVER__ADMIN_ADDR", "127.0.0.1:0")]).await;
    let admin = server
        .logged_addr("admin listening")
        .await
        .expect("admin address logged");
    assert_eq!(
        Rest::new(&server).get("/metrics", None).await.0,
        StatusCode::NOT_FOUND
    );
    let metrics = scrape(&format!("http://{admin}/metrics")).await;
    assert!(metrics.contains("conduit_build_info"));
    let ready = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn spans_continue_the_callers_trace_on_both_protocols() {
    let (collector, endpoint) = Collector::start().await;
    let mut server =
        TestServer::start_with(&[("CONDUIT__TELEMETRY__OTLP_ENDPOINT", &endpoint)]).await;
    let (rest_trace, rest_parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (grpc_trace, grpc_parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");

    let rest = reqwest::Client::new()
        .get(server.url("/api/articles/traced-missing"))
        .header("traceparent", format!("00-{rest_trace}-{rest_parent}-01"))
        .send()
        .await
        .expect("rest");
    assert_eq!(rest.status(), StatusCode::NOT_FOUND);
    let mut request = tonic::Request::new(pb::GetArticleRequest {
        slug: "traced".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{grpc_trace}-{grpc_parent}-01")
            .parse()
            .expect("meta"),
    );
    let status = ArticleServiceClient::new(server.channel().await)
        .get_article(request)
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);

    // Shutdown flushes pending spans.
    server.terminate();
    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join");
    assert!(exit.success());
    let spans = collector.0.lock().expect("spans").clone();

    let server_span = |trace: &str| {
        spans
            .iter()
            .find(|s| hex(&s.trace_id) == trace && s.kind == SpanKind::Server as i32)
            .cloned()
            .unwrap_or_else(|| panic!("no server span in trace {trace}: {spans:#?}"))
    };
    let rest_span = server_span(rest_trace);
    assert_eq!(
        hex(&rest_span.parent_span_id),
        rest_parent,
        "parent is the caller's span"
    );
    assert_eq!(rest_span.name, "GET /api/articles/{slug}");
    assert_eq!(
        attribute(&rest_span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(&rest_span, "http.route").as_deref(),
        Some("/api/articles/{slug}")
    );
    assert_eq!(
        attribute(&rest_span, "http.response.status_code").as_deref(),
        Some("404")
    );

    let grpc_span = server_span(grpc_trace);
    assert_eq!(hex(&grpc_span.parent_span_id), grpc_parent);
    assert_eq!(grpc_span.name, "conduit.v1.ArticleService/GetArticle");
    assert_eq!(attribute(&grpc_span, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute(&grpc_span, "rpc.service").as_deref(),
        Some("conduit.v1.ArticleService")
    );
    assert_eq!(
        attribute(&grpc_span, "rpc.method").as_deref(),
        Some("GetArticle")
    );
    assert_eq!(
        attribute(&grpc_span, "rpc.grpc.status_code").as_deref(),
        Some("5")
    );

    // Database calls are children of the request's span.
    for parent in [&rest_span, &grpc_span] {
        let db_child = spans.iter().find(|s| {
            s.trace_id == parent.trace_id
                && s.parent_span_id == parent.span_id
                && attribute(s, "db.system").is_some()
        });
        assert!(
            db_child.is_some(),
            "no database span under {}: {spans:#?}",
            parent.name
        );
    }
}

/// A Sentry ingest endpoint that keeps every request body.
async fn fake_sentry() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let sink = sink.clone();
        async move {
            sink.lock()
                .expect("events")
                .push(String::from_utf8_lossy(&body).into_owned());
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://public@{addr}/1"), received)
}

#[tokio::test]
async fn internal_errors_are_logged_and_tracked_with_their_ids() {
    let (dsn, events) = fake_sentry().await;
    // The cache off, so the request below reads the table it breaks: a table dropped
    // behind the service's back is no write the cache could hear of.
    let mut server = TestServer::start_with(&[
        ("CONDUIT__TELEMETRY__SENTRY_DSN", &dsn),
        ("CONDUIT__CACHE__MAX_BYTES", "0"),
    ])
    .await;

    // Break the schema under the running server: a real internal error, not a mock.
    let side = Database::connect(&server.db.url)
        .await
        .expect("side connection");
    let drop = if server.db.is_postgres() {
        "DROP TABLE tags CASCADE"
    } else {
        "DROP TABLE tags"
    };
    side.execute_unprepared(drop).await.expect("drop table");
    side.close().await.ok();

    let response = reqwest::Client::new()
        .get(server.url("/api/tags"))
        .header("x-request-id", "broken-tags-1")
        // The answer's body is written again with the id: no stale encoding may remain.
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        response.headers().get("content-encoding").is_none(),
        "the body is plain JSON, as its headers say: {:?}",
        response.headers()
    );
    let body: Value = response.json().await.expect("json");
    let message = body["errors"]["internal"][0].as_str().expect("message");
    assert_eq!(message, "internal error (request id broken-tags-1)");
    assert!(
        !body.to_string().to_lowercase().contains("tags\""),
        "no SQL or table names leak: {body}"
    );
    let mut tags = pb::tag_service_client::TagServiceClient::new(server.channel().await);
    let mut request = tonic::Request::new(pb::ListTagsRequest {});
    request
        .metadata_mut()
        .insert("x-request-id", "broken-tags-2".parse().expect("metadata"));
    let status = tags.list_tags(request).await.expect_err("table gone");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.message(),
        "internal error (request id broken-tags-2)"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.logs();
    for request_id in ["broken-tags-1", "broken-tags-2"] {
        let error = logs
            .iter()
            .find(|l| {
                l["level"] == "ERROR"
                    && l["message"] == "internal error"
                    && l["request_id"] == request_id
            })
            .unwrap_or_else(|| panic!("no error line for {request_id}: {logs:#?}"));
        assert!(
            error["trace_id"].as_str().is_some_and(|t| t.len() == 32),
            "{error}"
        );
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "details stay in the log: {error}"
        );
    }

    server.terminate();
    tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join");
    let events = events.lock().expect("events").clone();
    assert!(
        events
            .iter()
            .any(|e| e.contains("broken-tags-1") && e.contains("internal error")),
        "the error reached error tracking with its request id: {events:#?}"
    );
}

#[tokio::test]
async fn access_lines_name_the_caller_never_the_credentials() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let name = unique("caller");
    let token = api.register(&name).await;
    let response = reqwest::Client::new()
        .get(server.url("/api/user"))
        .header("authorization", format!("Token {token}"))
        .header("x-request-id", "who-am-i")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    let line = logs
        .iter()
        .find(|l| l["target"] == "access" && l["request_id"] == "who-am-i")
        .unwrap_or_else(|| panic!("no access line: {logs:#?}"));
    assert!(line["principal"].as_i64().is_some(), "{line}");
    assert_eq!(line["operation"], "GET /api/user");
    let everything = serde_json::to_string(&logs).expect("json");
    assert!(!everything.contains(&token), "a token reached the logs");
    assert!(
        !everything.contains("password123"),
        "a password reached the logs"
    );
}

#[tokio::test]
async fn grpc_web_outcomes_and_the_in_flight_gauge() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let missing = http
        .post(server.url("/conduit.v1.ArticleService/GetArticle"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-request-id", "web-missing")
        .body(grpc_frame(&pb::GetArticleRequest {
            slug: "no-such-article".into(),
        }))
        .send()
        .await
        .expect("grpc-web");
    assert_eq!(missing.status(), StatusCode::OK);
    missing.bytes().await.expect("body");
    // A successful call's status travels in the body's trailer frame: only the
    // translation-side recorder sees it.
    let ok = http
        .post(server.url("/conduit.v1.TagService/ListTags"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-request-id", "web-ok")
        .body(grpc_frame(&pb::ListTagsRequest {}))
        .send()
        .await
        .expect("grpc-web");
    ok.bytes().await.expect("body");
    // A gRPC content type on a REST path must not name a series after the raw path.
    http.get(server.url("/api/profiles/someone-random"))
        .header("content-type", "application/grpc")
        .send()
        .await
        .expect("send");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = scrape(&server.url("/metrics")).await;
    let requests = series(&metrics, "http_server_requests_total");
    let has = |needle: &str| requests.iter().any(|l| l.contains(needle));
    // tonic-web folds the trailers into the body; the outcome must still be the real one.
    assert!(
        has(
            r#"protocol="grpc-web",operation="conduit.v1.ArticleService/GetArticle",outcome="NOT_FOUND"} 1"#
        ),
        "{requests:#?}"
    );
    assert!(
        has(r#"protocol="grpc-web",operation="conduit.v1.TagService/ListTags",outcome="OK"} 1"#),
        "{requests:#?}"
    );
    assert!(!metrics.contains("someone-random"), "{requests:#?}");
    let logs = server.logs();
    let line = logs
        .iter()
        .find(|l| l["target"] == "access" && l["request_id"] == "web-ok")
        .unwrap_or_else(|| panic!("no access line: {logs:#?}"));
    assert_eq!(line["grpc_code"], "OK");

    // Everything finished: nothing is in flight any more.
    for protocol in ["grpc-web", "grpc"] {
        let gauge = format!("http_server_active_requests{{protocol=\"{protocol}\"}} 0");
        assert!(
            metrics.contains(&gauge),
            "{gauge} missing from {:#?}",
            series(&metrics, "http_server_active_requests")
        );
    }
}

#[tokio::test]
async fn losing_the_database_turns_not_ready_and_recovery_needs_no_restart() {
    let server =
        TestServer::start_with(&[("CONDUIT__DATABASE__HEALTH_CHECK_INTERVAL", "200ms")]).await;
    if !server.db.is_postgres() {
        eprintln!("skipped: needs CONDUIT_TEST_DATABASE_URL (Postgres) to cut the database off");
        return;
    }
    let admin_url = std::env::var("CONDUIT_TEST_DATABASE_URL").expect("admin url");
    let name = server
        .db
        .url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_string();
    let admin = Database::connect(&admin_url)
        .await
        .expect("admin connection");
    let http = reqwest::Client::new();
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let check =
        |health: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>| {
            let mut health = health.clone();
            async move {
                health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status)
            }
        };
    let ready = || async {
        http.get(server.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
    };
    assert_eq!(ready().await, StatusCode::OK);

    // Cut it off: no new connections, existing ones terminated.
    let cut = std::time::Instant::now();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .expect("disallow");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .expect("terminate");
    assert!(
        server
            .wait_for_readyz(StatusCode::SERVICE_UNAVAILABLE)
            .await,
        "readyz never reported the outage"
    );
    // Reported, not asserted (tests assert no timings): the README promises ~2 s with
    // the default check interval and timeout, and this prints what it was.
    eprintln!("readiness reported the outage after {:?}", cut.elapsed());
    let body: Value = http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(body["reason"], "database unreachable");
    assert_eq!(
        check(&mut health).await.expect("check"),
        2,
        "gRPC health NOT_SERVING"
    );
    // Requests needing the database get 503, not 500.
    assert_eq!(
        http.get(server.url("/api/tags"))
            .send()
            .await
            .expect("tags")
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .expect("allow");
    assert!(
        server.wait_for_readyz(StatusCode::OK).await,
        "readyz never recovered"
    );
    assert_eq!(
        check(&mut health).await.expect("check"),
        1,
        "gRPC health SERVING again"
    );
    assert_eq!(
        http.get(server.url("/api/tags"))
            .send()
            .await
            .expect("tags")
            .status(),
        StatusCode::OK
    );
    admin.close().await.ok();
}
