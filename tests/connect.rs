//! The Connect protocol, unary, on the gRPC methods' paths of the one port: JSON and
//! protobuf POSTs, GETs of side-effect-free methods, Connect's error shape with the same
//! `ErrorInfo` reasons, the deadline from `Connect-Timeout-Ms`, and metrics labelled
//! `connect` — against the real server, with reqwest as the plain HTTP client Connect
//! is designed for (buf curl and connect-node run in .ci/run).

mod common;

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use common::{Rest, TestServer, unique};
use conduit::proto::conduit::v1 as pb;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ARTICLES: &str = "/conduit.v1.ArticleService";
const USERS: &str = "/conduit.v1.UserService";

/// A Connect POST of `body` as `content_type`, with `headers` besides.
async fn call(
    server: &TestServer,
    method: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = server
        .http()
        .post(server.url(method))
        .header("content-type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("connect call")
}

async fn post(
    server: &TestServer,
    method: &str,
    body: Value,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let authorization = token.map(|token| format!("Token {token}"));
    let mut headers = vec![("connect-protocol-version", "1")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization));
    }
    let response = call(
        server,
        method,
        "application/json",
        body.to_string(),
        &headers,
    )
    .await;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, headers, json)
}

/// The `ErrorInfo` of a Connect error body, decoded from its base64 `value`.
fn error_info(body: &Value) -> pb_error::ErrorInfo {
    let detail = &body["details"][0];
    assert_eq!(detail["type"], "google.rpc.ErrorInfo", "{body}");
    let value = STANDARD_NO_PAD
        .decode(detail["value"].as_str().expect("value"))
        .expect("base64 without padding");
    let info = pb_error::ErrorInfo::decode(value.as_slice()).expect("ErrorInfo");
    assert_eq!(
        detail["debug"]["reason"],
        info.reason.as_str(),
        "debug is the same detail"
    );
    info
}

fn query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

mod pb_error {
    pub use tonic_types::pb::ErrorInfo;
}

#[tokio::test]
async fn json_calls_answer_canonical_proto3_json() {
    let server = TestServer::start().await;
    let username = unique("connect");
    let (status, headers, registered) = post(
        &server,
        &format!("{USERS}/Register"),
        json!({"username": username, "email": format!("{username}@example.com"), "password": "password123"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{registered}");
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers.contains_key("x-request-id"),
        "the stack's headers are there"
    );
    assert!(
        !headers
            .keys()
            .any(|name| name.as_str().starts_with("grpc-")),
        "no gRPC framing leaks into a Connect answer: {headers:?}"
    );
    let token = registered["user"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert!(
        registered["user"]["refreshToken"].is_string(),
        "proto3 JSON names are camelCase: {registered}"
    );
    assert!(
        registered["user"].get("password").is_none(),
        "default values are left out: {registered}"
    );

    let (status, _, me) = post(
        &server,
        &format!("{USERS}/GetCurrentUser"),
        json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["username"], username.as_str());

    let (status, _, created) = post(
        &server,
        &format!("{ARTICLES}/CreateArticle"),
        json!({"title": unique("Connect title"), "description": "d", "body": "b", "tagList": ["connect"]}),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let slug = created["article"]["slug"].as_str().expect("slug");
    // The REST façade sees what Connect wrote: one service layer.
    let (status, article) = Rest::new(&server)
        .get(&format!("/api/articles/{slug}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(article["article"]["tagList"], json!(["connect"]));
}

#[tokio::test]
async fn protobuf_calls_and_gets_of_reads() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("connectget")).await;
    let tag = unique("cg");
    rest.publish(&token, &unique("Connect get"), &[&tag]).await;

    let request = pb::ListArticlesRequest {
        tag: Some(tag.clone()),
        ..Default::default()
    };
    let response = call(
        &server,
        &format!("{ARTICLES}/ListArticles"),
        "application/proto",
        request.encode_to_vec(),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/proto");
    let listed = pb::ListArticlesResponse::decode(response.bytes().await.expect("body"))
        .expect("a ListArticlesResponse");
    assert_eq!(listed.articles.len(), 1);

    // GET: the message as percent-encoded JSON, and as base64url protobuf.
    let message = json!({"tag": tag}).to_string();
    let response = server
        .http()
        .get(server.url(&format!(
            "{ARTICLES}/ListArticles?connect=v1&encoding=json&message={}",
            query_value(&message)
        )))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    let listed: Value = response.json().await.expect("json");
    assert_eq!(
        listed["articles"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(request.encode_to_vec());
    let response = server
        .http()
        .get(server.url(&format!(
            "{ARTICLES}/ListArticles?encoding=proto&base64=1&message={encoded}"
        )))
        .send()
        .await
        .expect("GET proto");
    assert_eq!(response.status(), StatusCode::OK);
    let listed = pb::ListArticlesResponse::decode(response.bytes().await.expect("body"))
        .expect("a ListArticlesResponse");
    assert_eq!(listed.articles.len(), 1);

    // A method that changes state is not served over GET.
    let response = server
        .http()
        .get(server.url(&format!(
            "{ARTICLES}/CreateArticle?encoding=json&message={}",
            query_value("{}")
        )))
        .send()
        .await
        .expect("GET of a write");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn errors_are_connects_json_with_the_grpc_reasons_and_the_request_id() {
    let server = TestServer::start().await;

    let (status, headers, body) = post(
        &server,
        "/conduit.v1.ProfileService/GetProfile",
        json!({"username": unique("nobody")}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["code"], "not_found");
    let info = error_info(&body);
    assert_eq!(info.reason, "PROFILE_NOT_FOUND");
    assert_eq!(info.domain, "conduit");
    assert_eq!(
        info.metadata.get("request_id").map(String::as_str),
        headers["x-request-id"].to_str().ok(),
        "the request id is quoted as in gRPC"
    );

    let (status, _, body) =
        post(&server, &format!("{USERS}/GetCurrentUser"), json!({}), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(error_info(&body).reason, "TOKEN_MISSING");

    // Bad input: a field of the wrong type, JSON that is not JSON, protobuf that does not
    // decode. (A field the message does not have is skipped, as connect-go does.)
    for (content_type, bad) in [
        ("application/json", br#"{"pageSize": "many"}"#.to_vec()),
        ("application/json", b"{".to_vec()),
        ("application/proto", vec![0xff, 0xff, 0xff]),
    ] {
        let response = call(
            &server,
            &format!("{ARTICLES}/ListArticles"),
            content_type,
            bad,
            &[],
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], "invalid_argument", "{body}");
        assert_eq!(error_info(&body).reason, "MALFORMED_MESSAGE");
    }

    let (status, _, listed) = post(
        &server,
        &format!("{ARTICLES}/ListArticles"),
        json!({"pageSize": 1, "fieldOfANewerSchema": true}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");

    let response = call(
        &server,
        &format!("{ARTICLES}/ListArticles"),
        "application/json",
        "{}",
        &[("connect-timeout-ms", "soon")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = call(
        &server,
        &format!("{ARTICLES}/ListArticles"),
        "application/xml",
        "<x/>",
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(response.headers().contains_key("accept-post"));

    let (status, _, body) = post(&server, "/conduit.v1.ArticleService/Nope", json!({}), None).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(error_info(&body).reason, "METHOD_NOT_FOUND");

    // A body over server.body_limit, refused by the guard above the translation.
    let limited = TestServer::start_with(&[("CONDUIT__SERVER__BODY_LIMIT_BYTES", "1024")]).await;
    let response = call(
        &limited,
        &format!("{USERS}/Register"),
        "application/json",
        json!({"username": "x".repeat(4096)}).to_string(),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "resource_exhausted");
    assert_eq!(error_info(&body).reason, "REQUEST_TOO_LARGE");
    // Streamed, with no length declared: cut while read, inside the translation.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(br#"{"username": ""#.to_vec()),
        Ok("x".repeat(4096).into_bytes()),
        Ok(br#""}"#.to_vec()),
    ];
    let response = limited
        .http()
        .post(limited.url(&format!("{USERS}/Register")))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("streamed");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = response.json().await.expect("json");
    assert_eq!(error_info(&body).reason, "REQUEST_TOO_LARGE");
}

#[tokio::test]
async fn connect_timeout_ms_is_the_deadline() {
    let server = TestServer::start().await;
    let username = unique("deadline");
    // Registering hashes a password (argon2, milliseconds of work): one millisecond is
    // never enough.
    let response = call(&server, &format!("{USERS}/Register"), "application/json", json!({"username": username, "email": format!("{username}@example.com"), "password": "password123"}).to_string(), &[("connect-timeout-ms", "1")]).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "deadline_exceeded");
    assert_eq!(error_info(&body).reason, "DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn metrics_count_connect_calls_by_method_and_code() {
    let server = TestServer::start().await;
    let (status, _, _) = post(&server, "/conduit.v1.TagService/ListTags", json!({}), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = post(
        &server,
        "/conduit.v1.ProfileService/GetProfile",
        json!({"username": unique("ghost")}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Refused by the translation itself (no router saw it), still named by its method.
    let response = call(
        &server,
        "/conduit.v1.ProfileService/GetProfile",
        "application/json",
        "{",
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A browser's preflight is HTTP, not a call that never ended.
    let preflight = server
        .http()
        .request(
            reqwest::Method::OPTIONS,
            server.url("/conduit.v1.TagService/ListTags"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,connect-protocol-version",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());

    let metrics = server.metrics().await;
    let connect_lines = || {
        metrics.lines().filter(|line| {
            line.starts_with("http_server_requests_total{")
                && line.contains(r#"protocol="connect""#)
        })
    };
    let count = |operation: &str, outcome: &str| -> f64 {
        connect_lines()
            .filter(|line| {
                line.contains(&format!(r#"operation="{operation}""#))
                    && line.contains(&format!(r#"outcome="{outcome}""#))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        count("conduit.v1.TagService/ListTags", "OK"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        count("conduit.v1.ProfileService/GetProfile", "NOT_FOUND"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        count("conduit.v1.ProfileService/GetProfile", "INVALID_ARGUMENT"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        connect_lines().count(),
        3,
        "nothing else, no CANCELLED: {metrics}"
    );
}
