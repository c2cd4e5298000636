//! Hostile and careless clients: what a storm of requests may cost the process.

mod common;

use common::{Rest, TestServer, unique};
use conduit::proto::conduit::v1::{LoginRequest, user_service_client::UserServiceClient};
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

/// A memory figure of a process from /proc (Linux): `VmHWM` (peak resident) or `VmRSS`.
fn proc_memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("memory field");
    kib * 1024
}

fn peak_rss_bytes(pid: u32) -> u64 {
    proc_memory(pid, "VmHWM:")
}

const MIB: u64 = 1024 * 1024;
/// One Argon2id hash at the default parameters (m = 19456 KiB).
const HASH_MEMORY: u64 = 19 * MIB;
/// What a storm costs besides hashing: connections, request buffers, blocking threads'
/// stacks as far as they are touched.
const STORM_SLACK: u64 = 24 * MIB;

/// Sends `n` concurrent REST logins for unknown emails (each costs a hash).
async fn login_storm(server: &TestServer, n: usize) -> Vec<reqwest::Response> {
    let http = server.http();
    let logins = (0..n).map(|i| {
        let http = http.clone();
        let url = server.url("/api/users/login");
        async move {
            http.post(url)
                .json(&json!({"user": {"email": format!("nobody{i}@example.com"), "password": "wrong-password"}}))
                .send()
                .await
                .expect("answered")
        }
    });
    futures_util::future::join_all(logins).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_memory_is_what_the_slots_allow() {
    // Two slots and a queue long enough that every login of the storm is hashed.
    let server = TestServer::start_with(&[
        ("CONDUIT__AUTH__MAX_CONCURRENT_HASHES", "2"),
        ("CONDUIT__AUTH__HASH_QUEUE_TIMEOUT", "120s"),
    ])
    .await;
    let (status, _) = Rest::new(&server).get("/api/tags", None).await;
    assert_eq!(status, StatusCode::OK);
    let base = proc_memory(server.pid(), "VmRSS:");
    for storm in [30, 200] {
        for answer in login_storm(&server, storm).await {
            assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        }
        let peak = peak_rss_bytes(server.pid());
        let bound = base + 2 * HASH_MEMORY + STORM_SLACK;
        eprintln!(
            "{storm} logins: peak {} MiB, idle {} MiB, bound {} MiB",
            peak / MIB,
            base / MIB,
            bound / MIB
        );
        assert!(
            peak <= bound && peak <= 120 * MIB,
            "{storm} concurrent logins on 2 slots: peak RSS {} MiB over idle {} MiB + 2 × 19 MiB",
            peak / MIB,
            base / MIB
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_is_bounded_and_answered() {
    // One hashing slot and a short queue, so the storm certainly overflows it.
    let server = TestServer::start_with(&[
        ("CONDUIT__AUTH__MAX_CONCURRENT_HASHES", "1"),
        ("CONDUIT__AUTH__HASH_QUEUE_TIMEOUT", "50ms"),
    ])
    .await;
    let rest = Rest::new(&server);
    let name = unique("stormed");
    rest.register(&name).await;

    let http = server.http();
    let rest_logins = (0..96).map(|i| {
        let http = http.clone();
        let url = server.url("/api/users/login");
        async move {
            http.post(url)
                .json(&json!({"user": {"email": format!("nobody{i}@example.com"), "password": "wrong-password"}}))
                .send()
                .await
                .expect("answered")
        }
    });
    let channel = server.channel().await;
    let grpc_logins = (0..32).map(|i| {
        let mut client = UserServiceClient::new(channel.clone());
        async move {
            client
                .login(LoginRequest {
                    email: format!("nobody{i}@example.com"),
                    password: "wrong-password".into(),
                    otp: String::new(),
                })
                .await
        }
    });
    let (rest_answers, grpc_answers) = tokio::join!(
        futures_util::future::join_all(rest_logins),
        futures_util::future::join_all(grpc_logins)
    );

    let mut busy = 0;
    for response in rest_answers {
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                let body: serde_json::Value = response.json().await.expect("json");
                assert!(body["errors"]["request"].is_array(), "{body}");
            }
            other => panic!("a login in the storm answered {other}"),
        }
    }
    assert!(busy > 0, "96 logins on one slot: some must be refused");
    let mut grpc_busy = 0;
    for answer in grpc_answers {
        let status = answer.expect_err("no such user");
        match status.code() {
            Code::Unauthenticated => {}
            Code::Unavailable => grpc_busy += 1,
            other => panic!("a gRPC login in the storm answered {other:?}"),
        }
    }
    assert!(grpc_busy > 0, "gRPC logins are refused the same way");

    // The service kept answering, and a real login after the storm works.
    let (status, _) = rest.get("/api/tags", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = rest
        .post(
            "/api/users/login",
            None,
            json!({"user": {"email": format!("{name}@example.com"), "password": "password123"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Hashing is bounded: the storm costs one hash's memory at a time, not one per login.
    let peak = peak_rss_bytes(server.pid());
    assert!(
        peak <= 120 * MIB,
        "peak RSS {} MiB with one hashing slot",
        peak / MIB
    );

    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("conduit_password_hashing_refused_total ")),
        "{metrics}"
    );
}

#[tokio::test]
async fn request_ids_are_bounded_and_safe_or_replaced() {
    let server = TestServer::start().await;
    let http = server.http();
    let send = |id: reqwest::header::HeaderValue| {
        let request = http.get(server.url("/api/tags")).header("x-request-id", id);
        async move { request.send().await.expect("answered") }
    };
    let echoed = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_string()
    };

    let kept = send("trace-01HZX3:abc/def+=@x".parse().expect("header")).await;
    assert_eq!(echoed(&kept), "trace-01HZX3:abc/def+=@x");
    let at_limit = "a".repeat(128);
    assert_eq!(
        echoed(&send(at_limit.parse().expect("header")).await),
        at_limit
    );

    let huge = "a".repeat(100_000);
    let not_utf8 = reqwest::header::HeaderValue::from_bytes(b"id-\xff\xfe").expect("obs-text");
    for (what, id) in [
        ("129 characters", "a".repeat(129).parse().expect("header")),
        ("100 KB", huge.parse().expect("header")),
        ("spaces and quotes", "a \"b\" {c}".parse().expect("header")),
        ("not UTF-8", not_utf8),
    ] {
        let response = send(id).await;
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        let minted = echoed(&response);
        assert!(
            uuid::Uuid::parse_str(&minted).is_ok(),
            "{what}: replaced by a fresh id, got {minted:.60}"
        );
    }
    // Logged as answered: no line carries the caller's unsafe id.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = serde_json::to_string(&server.logs()).expect("json");
    assert!(
        !logs.contains(&"a".repeat(129)),
        "an over-long id reached the logs"
    );
}

#[tokio::test]
async fn rest_answers_carry_security_headers_grpc_answers_do_not() {
    let server = TestServer::start_with(&[(
        "CONDUIT__SERVER__HSTS",
        "max-age=63072000; includeSubDomains",
    )])
    .await;
    let http = server.http();
    for path in ["/api/tags", "/api/no-such-route", "/livez"] {
        let response = http.get(server.url(path)).send().await.expect("answered");
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(
            headers["content-security-policy"], "frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(
            headers["strict-transport-security"], "max-age=63072000; includeSubDomains",
            "{path}"
        );
    }

    let mut tags = conduit::proto::conduit::v1::tag_service_client::TagServiceClient::new(
        server.channel().await,
    );
    let answer = tags
        .list_tags(conduit::proto::conduit::v1::ListTagsRequest {})
        .await
        .expect("tags");
    for name in [
        "x-frame-options",
        "strict-transport-security",
        "referrer-policy",
    ] {
        assert!(answer.metadata().get(name).is_none(), "{name} on gRPC");
    }

    // Without the setting, no HSTS: plain-HTTP deployments must not pin browsers to HTTPS.
    let plain = TestServer::start().await;
    let response = plain
        .http()
        .get(plain.url("/api/tags"))
        .send()
        .await
        .expect("answered");
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn grpc_calls_in_encodings_other_than_protobuf_are_refused() {
    use conduit::proto::conduit::v1::ListTagsRequest;
    let server = TestServer::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let call = |content_type: &'static str| {
        h2.post(server.url("/conduit.v1.TagService/ListTags"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(common::grpc_frame(&ListTagsRequest {}))
            .send()
    };
    for refused in ["application/grpc+json", "application/grpc+thrift"] {
        let response = call(refused).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK, "{refused}");
        assert_eq!(response.headers()["grpc-status"], "3", "{refused}");
        let message = response.headers()["grpc-message"].to_str().expect("ascii");
        assert!(message.contains("not%20supported"), "{refused}: {message}");
    }
    for accepted in ["application/grpc", "application/grpc+proto"] {
        let response = call(accepted).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers().get("grpc-status").is_none(),
            "{accepted}: answered, not refused trailers-only"
        );
        assert!(
            !response.bytes().await.expect("body").is_empty(),
            "{accepted}"
        );
    }
    // gRPC-Web in JSON is refused the same way, over HTTP/1.1.
    let web = server
        .http()
        .post(server.url("/conduit.v1.TagService/ListTags"))
        .header("content-type", "application/grpc-web+json")
        .body(common::grpc_frame(&ListTagsRequest {}))
        .send()
        .await
        .expect("answered");
    assert_eq!(web.headers()["grpc-status"], "3");
}

/// A bare HTTP/2 connection to the server (prior knowledge), granting it `window` bytes
/// per stream; the connection's driver task is returned to be aborted at the end.
async fn h2_connection<B>(
    server: &TestServer,
    window: Option<u32>,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Some(window) = window {
        builder.initial_stream_window_size(window);
    }
    let (sender, connection) = builder
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    (sender, tokio::spawn(connection))
}

/// Reads until the server closes the connection; `false` if it is still open after a
/// generous guard (many times the configured handshake timeout).
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    });
    waited.await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_connections_are_capped_multi() {
    silent_connections_are_closed_and_connections_are_capped("multi").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_connections_are_capped_per_core() {
    silent_connections_are_closed_and_connections_are_capped("per-core").await;
}

/// The handshake timeout and the connection cap (one for the port, whichever thread accepts), in the given runtime layout.
async fn silent_connections_are_closed_and_connections_are_capped(runtime: &str) {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(&[
        ("CONDUIT__SERVER__HANDSHAKE_TIMEOUT", "300ms"),
        ("CONDUIT__SERVER__MAX_CONNECTIONS", "10"),
        ("CONDUIT__SERVER__RUNTIME", runtime),
        ("CONDUIT__SERVER__WORKERS", "2"),
    ])
    .await;

    // 30 connections that never finish a request: three times the cap.
    let mut silent = Vec::new();
    for i in 0..30 {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        if i % 3 == 1 {
            stream.write_all(b"GET /api/tags HT").await.expect("write");
        }
        silent.push(stream);
    }
    // A real client still gets answered: the silent ones are closed and make room.
    let (status, _) = Rest::new(&server).get("/api/tags", None).await;
    assert_eq!(status, StatusCode::OK);
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream).await,
            "silent connection {i} left open"
        );
    }

    // An HTTP/2 client that completed the preface may idle past the timeout (gRPC
    // channels do) and use the same connection afterwards.
    let (mut h2, driver) = h2_connection(&server, None).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let request = http::Request::get(format!("http://{}/livez", server.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = h2.send_request(request).await.expect("same connection");
    assert_eq!(response.status(), StatusCode::OK);
    driver.abort();

    // The limit is reported once per episode (here a few: the silent connections are let
    // in ten at a time), not once for each of the 20 connections that waited.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let warnings = server
        .logs()
        .iter()
        .filter(|l| {
            l["message"] == "connection limit reached; new connections wait until one closes"
        })
        .count();
    assert!(
        (1..10).contains(&warnings),
        "{warnings} limit warnings for 30 waiting connections"
    );
}

async fn login_status(
    server: &TestServer,
    email: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = server
        .http()
        .post(server.url("/api/users/login"))
        .json(&json!({"user": {"email": email, "password": "wrong-password"}}));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.expect("answered")
}

#[tokio::test]
async fn credential_guessing_is_rate_limited_per_account_and_per_client() {
    let limits = [
        ("CONDUIT__RATE_LIMIT__PER_ACCOUNT_PER_MINUTE", "3"),
        ("CONDUIT__RATE_LIMIT__PER_IP_PER_MINUTE", "6"),
    ];
    let server = TestServer::start_with(&limits).await;
    let victim = format!("{}@example.com", unique("victim"));

    // Per account: three guesses, then 429 with Retry-After.
    for _ in 0..3 {
        let response = login_status(&server, &victim, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = login_status(&server, &victim.to_uppercase(), None).await;
    assert_eq!(
        limited.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "any case of the email"
    );
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = limited.json().await.expect("json");
    assert!(
        body["errors"]["request"][0]
            .as_str()
            .is_some_and(|m| m.contains("too many")),
        "{body}"
    );

    // Per client: other accounts from the same address run out too (4 attempts so far).
    for i in 0..2 {
        let other = format!("{}@example.com", unique(&format!("other{i}")));
        assert_eq!(
            login_status(&server, &other, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let fresh = format!("{}@example.com", unique("fresh"));
    assert_eq!(
        login_status(&server, &fresh, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A forwarded-for header from an untrusted peer changes nothing.
    assert_eq!(
        login_status(&server, &fresh, Some("203.0.113.7"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // gRPC shares the limits: RESOURCE_EXHAUSTED with RetryInfo.
    let mut users = UserServiceClient::new(server.channel().await);
    let status = users
        .login(LoginRequest {
            email: fresh.clone(),
            password: "wrong-password".into(),
            otp: String::new(),
        })
        .await
        .expect_err("limited");
    assert_eq!(status.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some_and(|d| d.as_secs() >= 1));

    // Behind a trusted proxy each forwarded client has its own share.
    let mut behind_proxy = limits.to_vec();
    behind_proxy.push(("CONDUIT__SERVER__TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8"));
    let proxied = TestServer::start_with(&behind_proxy).await;
    for i in 0..6 {
        let email = format!("{}@example.com", unique(&format!("p{i}")));
        login_status(&proxied, &email, Some("203.0.113.7")).await;
    }
    let email = format!("{}@example.com", unique("p-last"));
    assert_eq!(
        login_status(&proxied, &email, Some("203.0.113.7"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the forwarded client is limited"
    );
    assert_eq!(
        login_status(&proxied, &email, Some("198.51.100.20"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "another forwarded client is not"
    );
}

/// The access line of the request with this id, once it is written.
async fn access_line(server: &TestServer, request_id: &str) -> serde_json::Value {
    for _ in 0..100 {
        if let Some(line) = server
            .logs()
            .into_iter()
            .find(|l| l["target"] == "access" && l["request_id"] == request_id)
        {
            return line;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no access line for {request_id}: {:#?}", server.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_mid_body_are_cancellations() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;

    // REST: the body is promised, half sent, and the connection closed.
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /api/users/login HTTP/1.1\r\nhost: conduit\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\nx-request-id: gone-rest\r\n\r\n{\"user\":",
        )
        .await
        .expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(stream);
    let line = access_line(&server, "gone-rest").await;
    assert_eq!(line["status"], 499, "{line}");

    // gRPC: a message half sent, then the call abandoned: RST_STREAM(CANCEL), as a client
    // sends when its deadline passes or the call is dropped. Sent with h2 itself, so the
    // reset is never raced by an end of stream (a client library that ends the body
    // first has sent a truncated message, not left).
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.expect("h2 ready");
    let request = http::Request::post(format!(
        "http://{}/conduit.v1.UserService/Login",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("x-request-id", "gone-grpc")
    .body(())
    .expect("request");
    let (_response, mut body) = client.send_request(request, false).expect("send");
    // A frame header promising 500 bytes, and 3 of them.
    body.send_data(
        bytes::Bytes::from_static(&[0, 0, 0, 1, 244, 10, 1, 97]),
        false,
    )
    .expect("data");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    body.send_reset(h2::Reason::CANCEL);
    let line = access_line(&server, "gone-grpc").await;
    assert_eq!(line["grpc_code"], "CANCELLED", "{line}");
    driver.abort();
}

/// The gRPC status of a gRPC-Web answer: a header when trailers-only, else in the
/// trailer frame at the end of the body (flag 0x80, then `grpc-status:N` lines).
async fn grpc_web_status(response: reqwest::Response, text: bool) -> String {
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().expect("ascii").to_string();
    }
    let body = response.bytes().await.expect("body").to_vec();
    let body = if text {
        use base64::Engine;
        // Each frame is base64 of its own; decode them one padded chunk at a time.
        let text = String::from_utf8(body).expect("base64 text");
        let mut decoded = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let end = rest.find('=').map_or(rest.len(), |i| {
                i + rest[i..].chars().take_while(|c| *c == '=').count()
            });
            decoded.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&rest[..end])
                    .expect("base64"),
            );
            rest = &rest[end..];
        }
        decoded
    } else {
        body
    };
    let text = String::from_utf8_lossy(&body);
    text.split("grpc-status:")
        .nth(1)
        .and_then(|s| s.split(['\r', '\n']).next())
        .expect("a grpc-status trailer")
        .trim()
        .to_string()
}

#[tokio::test]
async fn over_limit_messages_are_resource_exhausted_in_every_framing() {
    use base64::Engine;
    use conduit::proto::conduit::v1::LoginRequest;
    let server = TestServer::start_with(&[("CONDUIT__SERVER__BODY_LIMIT_BYTES", "1024")]).await;
    let message = common::grpc_frame(&LoginRequest {
        email: "big@example.com".into(),
        password: "p".repeat(1200),
        otp: String::new(),
    });
    let text = base64::engine::general_purpose::STANDARD.encode(&message);
    for (content_type, body, is_text) in [
        ("application/grpc-web+proto", message.clone(), false),
        ("application/grpc-web-text", text.into_bytes(), true),
    ] {
        for declared in [true, false] {
            let body = if declared {
                reqwest::Body::from(body.clone())
            } else {
                // Streamed: no content-length, chunked.
                let chunks = vec![Ok::<_, std::io::Error>(body.clone())];
                reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
            };
            let response = server
                .http()
                .post(server.url("/conduit.v1.UserService/Login"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                grpc_web_status(response, is_text).await,
                "8",
                "{content_type}, content-length declared: {declared}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_multi() {
    a_client_that_stops_reading_is_disconnected("multi").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_per_core() {
    a_client_that_stops_reading_is_disconnected("per-core").await;
}

/// The send (stall) timeout, in the given runtime layout.
async fn a_client_that_stops_reading_is_disconnected(runtime: &str) {
    use http_body_util::BodyExt;
    let server = TestServer::start_with(&[
        ("CONDUIT__SERVER__SEND_TIMEOUT", "500ms"),
        ("CONDUIT__SERVER__RUNTIME", runtime),
        ("CONDUIT__SERVER__WORKERS", "2"),
    ])
    .await;
    // An HTTP/2 client that grants the server no window: no response data can be sent.
    let (mut h2, driver) = h2_connection(&server, Some(0)).await;
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let request = http::Request::get(format!("http://{}/api/tags", server.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = h2
            .send_request(request)
            .await
            .expect("headers need no window");
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(response.into_body());
    }
    // Its responses are not held for ever: the connection is closed, every body fails.
    let first = bodies.remove(0);
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), first.collect()).await;
    assert!(
        matches!(read, Ok(Err(_))),
        "the stalled response ended with the connection, not with data or never"
    );
    driver.abort();
    // Everyone else is still served.
    let (status, _) = Rest::new(&server).get("/api/tags", None).await;
    assert_eq!(status, StatusCode::OK);
}
