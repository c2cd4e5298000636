//! Process lifecycle, from outside: startup failures, configuration errors, operator
//! commands, and a SIGTERM that drains without failing the request in flight.

mod common;

use std::time::{Duration, Instant};

use common::{Rest, TestDb, TestServer, run_cli, unique};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "connection closed before {needle:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn sigterm_drains_and_finishes_the_request_in_flight_multi() {
    sigterm_drains_and_finishes_the_request_in_flight("multi").await;
}

#[tokio::test]
async fn sigterm_drains_and_finishes_the_request_in_flight_per_core() {
    sigterm_drains_and_finishes_the_request_in_flight("per-core").await;
}

/// The drain, in the given runtime layout (`server.runtime`).
async fn sigterm_drains_and_finishes_the_request_in_flight(runtime: &str) {
    // A shutdown timeout far beyond the test's patience: exiting proves nothing waited on it
    // (neither the open Health/Watch stream nor the request in flight).
    let mut server = TestServer::start_with(&[
        ("CONDUIT__SERVER__DRAIN_DELAY", "300ms"),
        ("CONDUIT__SERVER__SHUTDOWN_TIMEOUT", "1h"),
        ("CONDUIT__SERVER__RUNTIME", runtime),
        ("CONDUIT__SERVER__WORKERS", "2"),
    ])
    .await;
    let sockets = if runtime == "per-core" { 2 } else { 1 };
    let listening = server
        .logs()
        .into_iter()
        .find(|l| l["message"] == "listening")
        .expect("listening line");
    assert_eq!(listening["sockets"], sockets, "{listening}");
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        watch.next().await.expect("update").expect("ok").status,
        ServingStatus::Serving as i32
    );

    // A registration whose body is only half sent. `Expect: 100-continue` makes the server
    // say when the handler has started reading, so the request is provably in flight.
    let body =
        json!({"user": {"username": "inflight", "email": "inflight@x.io", "password": "inflight"}})
            .to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST /api/users HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    read_until(&mut stream, "100 Continue").await;
    stream
        .write_all(first.as_bytes())
        .await
        .expect("write half");

    server.terminate();

    // Readiness turns first: gRPC health reports NOT_SERVING during the drain delay...
    let update = watch.next().await.expect("update").expect("ok");
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // ...then the listener closes while our request is still open.
    loop {
        if TcpStream::connect(server.addr).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stream.write_all(rest.as_bytes()).await.expect("write rest");
    let response = read_until(&mut stream, "\"inflight\"").await;
    assert!(response.contains("HTTP/1.1 201"), "{response}");

    // The server ends the Watch stream cleanly (OK, no error) once the drain delay is over,
    // rather than holding it, and with it the connection, until the shutdown timeout.
    let guard = Duration::from_secs(60);
    let end = tokio::time::timeout(guard, watch.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "Health/Watch did not end cleanly: {end:?}"
    );
    let status = tokio::time::timeout(guard, tokio::task::spawn_blocking(move || server.wait()))
        .await
        .expect("the process exits without waiting for the shutdown timeout")
        .expect("join");
    assert!(status.success(), "clean exit after drain: {status:?}");
}

#[tokio::test]
async fn readiness_reports_draining_over_http() {
    let server = TestServer::start_with(&[("CONDUIT__SERVER__DRAIN_DELAY", "5s")]).await;
    server.terminate();
    let http = server.http();
    assert!(
        server
            .wait_for_readyz(reqwest::StatusCode::SERVICE_UNAVAILABLE)
            .await,
        "readyz turned 503 while draining"
    );
    let body: Value = http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("draining")),
        "{body}"
    );
    // Alerting sees the same state, and why.
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("\nconduit_ready 0\n"), "{metrics}");
    assert!(
        metrics.contains("conduit_not_ready_because{condition=\"draining\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("conduit_not_ready_because{condition=\"database_unreachable\"} 0"),
        "{metrics}"
    );
    // Liveness is unaffected: the process is healthy, just leaving.
    assert_eq!(
        http.get(server.url("/livez"))
            .send()
            .await
            .expect("livez")
            .status(),
        reqwest::StatusCode::OK
    );
}

#[tokio::test]
async fn unreachable_database_fails_fast_with_a_clear_message() {
    let started = Instant::now();
    let output = run_cli(
        &["serve"],
        &[
            ("CONDUIT__DATABASE__STARTUP_DEADLINE", "2s"),
            ("CONDUIT__DATABASE__CONNECT_TIMEOUT", "500ms"),
        ],
        "postgres://conduit@127.0.0.1:1/conduit",
    );
    let elapsed = started.elapsed();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("database unreachable at postgres://"),
        "{stderr}"
    );
    assert!(stderr.contains("within 2s"), "{stderr}");
    // Generous slack over the 2s deadline: this checks that it gives up, not how fast.
    assert!(
        elapsed < Duration::from_secs(30),
        "gave up after {elapsed:?}"
    );
}

#[tokio::test]
async fn invalid_configuration_is_rejected_naming_the_key() {
    let db = TestDb::new().await;
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("CONDUIT__SERVER__LISTEN", "0.0.0.0:1")], "listen"),
        (
            &[("CONDUIT__SERVER__REQUEST_TIMEOUT", "soon")],
            "request_timeout",
        ),
        (
            &[("CONDUIT__SERVER__ADDR", "not-an-address")],
            "server.addr",
        ),
        (&[("APP_ENV", "prod")], "auth.jwt_secret"),
        // The built-in secret is public: never on an address others can reach.
        (&[("CONDUIT__SERVER__ADDR", "0.0.0.0:0")], "auth.jwt_secret"),
    ];
    for (env, key) in cases {
        for args in [&["config", "check"][..], &["serve"][..]] {
            let output = run_cli(args, env, &db.url);
            assert_eq!(output.status.code(), Some(2), "{env:?} {args:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(key), "{env:?}: {stderr}");
        }
    }
}

#[tokio::test]
async fn config_check_prints_the_effective_configuration_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("jwt");
    std::fs::write(&secret_file, "file-secret-that-is-long-enough-for-prod\n").expect("write");
    let output = run_cli(
        &["config", "check"],
        &[
            ("APP_ENV", "prod"),
            (
                "CONDUIT__AUTH__JWT_SECRET_FILE",
                secret_file.to_str().expect("utf8"),
            ),
            ("CONDUIT__SERVER__ADDR", "0.0.0.0:9000"),
        ],
        "postgres://app:hunter2@db.internal:5432/conduit",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("APP_ENV = prod"), "{stdout}");
    assert!(stdout.contains("addr = \"0.0.0.0:9000\""), "{stdout}");
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("file-secret"),
        "{stdout}"
    );
    assert!(stdout.contains("<redacted>"), "{stdout}");
    // Run from a directory without config/: the prod profile is compiled in.
    assert!(stdout.contains("drain_delay = \"5s\""), "{stdout}");
    assert!(stdout.contains("migrate_on_start = false"), "{stdout}");
    assert!(stdout.contains("admin_addr = \"0.0.0.0:9090\""), "{stdout}");
    assert!(
        stdout.contains("built-in config/prod.toml") && !stdout.contains("(file)"),
        "the layers that applied are named: {stdout}"
    );
    assert!(stdout.contains("environment ("), "{stdout}");
}

#[tokio::test]
async fn migrate_commands_apply_list_and_roll_back() {
    let db = TestDb::new().await;
    let status = |db: &TestDb| {
        String::from_utf8_lossy(&run_cli(&["migrate", "status"], &[], &db.url).stdout).into_owned()
    };
    let before = status(&db);
    assert!(
        before.contains("pending m20261124_000001_create_users"),
        "{before}"
    );
    assert!(
        before.contains("pending m20261124_000002_create_content"),
        "{before}"
    );
    let up = run_cli(&["migrate", "up", "--analyze"], &[], &db.url);
    assert!(up.status.success());
    assert!(String::from_utf8_lossy(&up.stdout).contains("ANALYZE"));
    let applied = status(&db);
    assert!(
        applied.contains("applied m20261124_000001_create_users"),
        "{applied}"
    );
    assert!(
        applied.contains("applied m20261124_000002_create_content"),
        "{applied}"
    );
    assert!(
        applied.contains("applied m20261124_000003_create_idempotency_keys"),
        "{applied}"
    );
    assert!(!applied.contains("pending"), "all applied: {applied}");
    assert!(run_cli(&["migrate", "down"], &[], &db.url).status.success());
    let rolled_back = status(&db);
    let lines: Vec<&str> = rolled_back.lines().collect();
    assert!(
        lines.last().is_some_and(|l| l.starts_with("pending "))
            && lines[..lines.len() - 1]
                .iter()
                .all(|l| l.starts_with("applied ")),
        "only the newest migration was rolled back: {rolled_back}"
    );
}

/// Existing accounts that differ only in case are listed, never merged: the migration
/// that makes identities case-insensitive stops, changes nothing, and succeeds once an
/// operator has resolved them. After it, the database itself refuses such a duplicate.
#[tokio::test]
async fn case_duplicates_stop_the_identity_migration() {
    use sea_orm::ConnectionTrait;
    let db = TestDb::new().await;
    assert!(run_cli(&["migrate", "up"], &[], &db.url).status.success());
    // Back to the case-sensitive indexes, where such rows could exist (the migrations
    // after it go first).
    while !String::from_utf8_lossy(&run_cli(&["migrate", "status"], &[], &db.url).stdout)
        .contains("pending m20261124_000004_case_insensitive_identities")
    {
        assert!(run_cli(&["migrate", "down"], &[], &db.url).status.success());
    }
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    let insert = |email: &str, username: &str| {
        format!(
            "INSERT INTO users (email, username, password_hash, created_at, updated_at) \
             VALUES ('{email}', '{username}', 'x', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
    };
    for (email, username) in [
        ("Jake@Example.io", "jake"),
        ("jake@example.io", "jacob"),
        ("anna@example.io", "Anna"),
        ("anne@example.io", "ANNA"),
    ] {
        conn.execute_unprepared(&insert(email, username))
            .await
            .expect("case-sensitive indexes accept it");
    }

    let refused = run_cli(&["migrate", "up"], &[], &db.url);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{output}");
    assert!(
        output.contains(
            r#"email "jake@example.io": user 1 "Jake@Example.io", user 2 "jake@example.io""#
        ),
        "{output}"
    );
    assert!(
        output.contains(r#"username "anna": user 3 "Anna", user 4 "ANNA""#),
        "{output}"
    );
    let status = run_cli(&["migrate", "status"], &[], &db.url);
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .contains("pending m20261124_000004_case_insensitive_identities")
    );

    conn.execute_unprepared("UPDATE users SET email = 'jacob@example.io' WHERE id = 2")
        .await
        .expect("resolve");
    conn.execute_unprepared("UPDATE users SET username = 'anne' WHERE id = 4")
        .await
        .expect("resolve");
    let applied = run_cli(&["migrate", "up"], &[], &db.url);
    assert!(applied.status.success(), "{applied:?}");
    for (email, username) in [("JAKE@example.io", "other"), ("new@example.io", "aNNa")] {
        let err = conn
            .execute_unprepared(&insert(email, username))
            .await
            .expect_err("the database refuses a case duplicate");
        assert!(
            matches!(
                err.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ),
            "{err}"
        );
    }
    conn.close().await.expect("close");
}

/// Every RealWorld operation: method, path, operationId (as in the spec), tag, auth.
const REALWORLD_OPERATIONS: &[(&str, &str, &str, &str, Auth)] = &[
    (
        "post",
        "/api/users/login",
        "Login",
        "User and Authentication",
        Auth::None,
    ),
    (
        "post",
        "/api/users",
        "CreateUser",
        "User and Authentication",
        Auth::None,
    ),
    (
        "get",
        "/api/user",
        "GetCurrentUser",
        "User and Authentication",
        Auth::Required,
    ),
    (
        "put",
        "/api/user",
        "UpdateCurrentUser",
        "User and Authentication",
        Auth::Required,
    ),
    (
        "get",
        "/api/profiles/{username}",
        "GetProfileByUsername",
        "Profile",
        Auth::Optional,
    ),
    (
        "post",
        "/api/profiles/{username}/follow",
        "FollowUserByUsername",
        "Profile",
        Auth::Required,
    ),
    (
        "delete",
        "/api/profiles/{username}/follow",
        "UnfollowUserByUsername",
        "Profile",
        Auth::Required,
    ),
    (
        "get",
        "/api/articles/feed",
        "GetArticlesFeed",
        "Articles",
        Auth::Required,
    ),
    (
        "get",
        "/api/articles",
        "GetArticles",
        "Articles",
        Auth::Optional,
    ),
    (
        "post",
        "/api/articles",
        "CreateArticle",
        "Articles",
        Auth::Required,
    ),
    (
        "get",
        "/api/articles/{slug}",
        "GetArticle",
        "Articles",
        Auth::Optional,
    ),
    (
        "put",
        "/api/articles/{slug}",
        "UpdateArticle",
        "Articles",
        Auth::Required,
    ),
    (
        "delete",
        "/api/articles/{slug}",
        "DeleteArticle",
        "Articles",
        Auth::Required,
    ),
    (
        "get",
        "/api/articles/{slug}/comments",
        "GetArticleComments",
        "Comments",
        Auth::Optional,
    ),
    (
        "post",
        "/api/articles/{slug}/comments",
        "CreateArticleComment",
        "Comments",
        Auth::Required,
    ),
    (
        "delete",
        "/api/articles/{slug}/comments/{id}",
        "DeleteArticleComment",
        "Comments",
        Auth::Required,
    ),
    (
        "post",
        "/api/articles/{slug}/favorite",
        "CreateArticleFavorite",
        "Favorites",
        Auth::Required,
    ),
    (
        "delete",
        "/api/articles/{slug}/favorite",
        "DeleteArticleFavorite",
        "Favorites",
        Auth::Required,
    ),
    ("get", "/api/tags", "GetTags", "Tags", Auth::None),
];

/// Sessions and second factors, and a deprecated alias: beyond the RealWorld spec.
const BEYOND_THE_SPEC: &[(&str, &str, &str, &str, Auth)] = &[
    (
        "get",
        "/api/feed",
        "GetArticlesFeedLegacy",
        "Articles",
        Auth::Required,
    ),
    (
        "post",
        "/api/users/refresh",
        "RefreshToken",
        "User and Authentication",
        Auth::None,
    ),
    (
        "post",
        "/api/users/logout",
        "Logout",
        "User and Authentication",
        Auth::Required,
    ),
    (
        "get",
        "/api/user/sessions",
        "ListSessions",
        "User and Authentication",
        Auth::Required,
    ),
    (
        "delete",
        "/api/user/sessions/{id}",
        "RevokeSession",
        "User and Authentication",
        Auth::Required,
    ),
    (
        "post",
        "/api/user/totp",
        "EnrollTotp",
        "User and Authentication",
        Auth::Required,
    ),
    (
        "post",
        "/api/user/totp/confirm",
        "ConfirmTotp",
        "User and Authentication",
        Auth::Required,
    ),
    (
        "delete",
        "/api/user/totp",
        "DisableTotp",
        "User and Authentication",
        Auth::Required,
    ),
];

#[derive(Clone, Copy, PartialEq)]
enum Auth {
    None,
    Optional,
    Required,
}

#[tokio::test]
async fn openapi_command_documents_every_operation() {
    let output = run_cli(&["openapi"], &[], "sqlite::memory:");
    assert!(output.status.success());
    let doc: Value = serde_json::from_slice(&output.stdout).expect("JSON document");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["components"]["securitySchemes"]["Token"].is_object());
    let mut documented = 0;
    for (method, path, id, tag, auth) in REALWORLD_OPERATIONS.iter().chain(BEYOND_THE_SPEC) {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} undocumented");
        documented += 1;
        assert_eq!(op["operationId"], *id, "{method} {path}");
        assert_eq!(op["tags"], json!([tag]), "{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|code| code.starts_with('2')),
            "{id}: no success response"
        );
        let security = &op["security"];
        match auth {
            Auth::Required => assert_eq!(*security, json!([{"Token": []}]), "{id}"),
            Auth::Optional => assert_eq!(*security, json!([{}, {"Token": []}]), "{id}"),
            Auth::None => assert!(security.is_null(), "{id}: {security}"),
        }
        if *id != "GetTags" {
            let error = responses
                .iter()
                .find(|(code, _)| code.starts_with('4'))
                .unwrap_or_else(|| panic!("{id}: no error response"));
            assert_eq!(
                error.1["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/GenericErrorModel",
                "{id}"
            );
        }
    }
    let total: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(
        total, documented,
        "no undocumented extras, no missing operations"
    );
}

/// With migrations left to a job, a server on an unmigrated schema is not ready (and
/// says why) instead of answering 500s, and becomes ready by itself once the job has run.
/// A schema ahead of the binary (a rolled-back deployment) is served, with a warning.
#[tokio::test]
async fn schema_behind_is_not_ready_until_migrated_and_ahead_is_served() {
    use sea_orm::ConnectionTrait;
    let db = TestDb::new().await;
    let no_migrate = [("CONDUIT__DATABASE__MIGRATE_ON_START", "false")];
    let server = TestServer::start_on(db.share(), &no_migrate).await;
    let http = reqwest::Client::new();
    let readyz = |server: &TestServer| {
        let request = http.get(server.url("/readyz"));
        async move {
            let response = request.send().await.expect("readyz");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = readyz(&server).await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("migrations pending")),
        "{body}"
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(status, 2, "gRPC health NOT_SERVING");
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("conduit_not_ready_because{condition=\"schema_behind\"} 1"),
        "{metrics}"
    );
    assert!(
        server.logs().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("schema is behind"))),
        "logged"
    );

    assert!(run_cli(&["migrate", "up"], &[], &db.url).status.success());
    assert!(
        server.wait_for_readyz(reqwest::StatusCode::OK).await,
        "ready once migrated"
    );
    Rest::new(&server).register(&unique("mig")).await;
    drop(server);

    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    conn.execute_unprepared(
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20991231_000001_from_a_newer_release', 0)",
    )
    .await
    .expect("a newer release's migration");
    conn.close().await.expect("close");
    let server = TestServer::start_on(db.share(), &no_migrate).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(
        server.logs().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not know"))),
        "warned"
    );
}

/// A rolling restart as Kubernetes does it: load on both protocols runs on through
/// SIGTERM until the "load balancer" notices readiness (here: a second later, well inside
/// the drain delay), and no request fails. HTTP/1.1 answers given while draining say
/// `Connection: close`, so keep-alive clients move before the listener closes.
#[tokio::test]
async fn a_rolling_restart_fails_no_request() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    };
    let mut server = TestServer::start_with(&[
        ("CONDUIT__SERVER__DRAIN_DELAY", "3s"),
        ("CONDUIT__SERVER__SHUTDOWN_TIMEOUT", "20s"),
    ])
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed, closing) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (stop, served, failed, closing) = (
            stop.clone(),
            served.clone(),
            failed.clone(),
            closing.clone(),
        );
        let http = reqwest::Client::new();
        let url = server.url("/api/articles?limit=5");
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        if r.headers().get("connection").is_some_and(|v| v == "close") {
                            closing.fetch_add(1, Ordering::SeqCst);
                        }
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        eprintln!("REST request failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let channel = server.channel().await;
    for _ in 0..2 {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        let mut articles =
            conduit::proto::conduit::v1::article_service_client::ArticleServiceClient::new(
                channel.clone(),
            );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let request = conduit::proto::conduit::v1::ListArticlesRequest {
                    page_size: 5,
                    ..Default::default()
                };
                match articles.list_articles(request).await {
                    Ok(_) => served.fetch_add(1, Ordering::SeqCst),
                    Err(status) => {
                        eprintln!("gRPC request failed: {status:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = served.load(Ordering::SeqCst);
    server.terminate();
    // The load balancer's probe period: traffic keeps coming for a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("worker");
    }
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join");
    assert!(status.success(), "{status:?}");
    let (served, failed) = (served.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(failed, 0, "{failed} of {} requests failed", served + failed);
    assert!(served > before, "traffic was served during the drain");
    assert!(
        closing.load(Ordering::SeqCst) > 0,
        "HTTP/1.1 answers while draining close their connection"
    );
}

/// A second SIGTERM during the drain exits at once, and says so.
#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut server = TestServer::start_with(&[("CONDUIT__SERVER__DRAIN_DELAY", "1h")]).await;
    server.terminate();
    assert!(
        server
            .wait_for_readyz(reqwest::StatusCode::SERVICE_UNAVAILABLE)
            .await,
        "draining"
    );
    server.terminate();
    let (server, status) = tokio::task::spawn_blocking(move || {
        let status = server.wait();
        (server, status)
    })
    .await
    .expect("join");
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    // Reading the output ends with the process; give the reader thread a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.logs().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("second shutdown signal"))),
        "logged"
    );
}

/// `conduit healthcheck` (the container's HEALTHCHECK) exits 0 only when the configured
/// address answers /readyz with 200.
#[tokio::test]
async fn healthcheck_follows_readiness() {
    let db = TestDb::new().await;
    let check = |addr: &str| {
        run_cli(
            &["healthcheck"],
            &[
                ("CONDUIT__SERVER__ADDR", addr),
                // A listener on 0.0.0.0 may not use the development secret.
                (
                    "CONDUIT__AUTH__JWT_SECRET",
                    "healthcheck-secret-0123456789-abcdefgh",
                ),
            ],
            "sqlite::memory:",
        )
    };
    let ready = TestServer::start_on(db.share(), &[]).await;
    let output = check(&ready.addr.to_string());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // An unspecified address is asked on loopback, as inside a container.
    assert!(
        check(&format!("0.0.0.0:{}", ready.addr.port()))
            .status
            .success()
    );
    drop(ready);

    let unmigrated =
        TestServer::start_with(&[("CONDUIT__DATABASE__MIGRATE_ON_START", "false")]).await;
    let output = check(&unmigrated.addr.to_string());
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let nothing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    assert_eq!(check(&nothing.to_string()).status.code(), Some(1));
}
