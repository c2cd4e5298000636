//! The one-port backbone: gRPC, gRPC-Web and REST on the same socket through the same
//! stack — health, reflection, fallbacks, request ids, limits, deadlines, CORS, compression,
//! docs — against the real server.

mod common;

use std::time::Duration;

use common::{TestServer, grpc_frame, unique};
use conduit::proto::conduit::v1::{self as pb, user_service_client::UserServiceClient};
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn probes_and_grpc_health() {
    let server = TestServer::start().await;
    let live = server
        .http()
        .get(server.url("/livez"))
        .send()
        .await
        .expect("livez");
    assert_eq!(live.status(), StatusCode::OK);
    let ready = server
        .http()
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        ready.json::<Value>().await.expect("json"),
        json!({"status": "ready"})
    );

    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "",
        "conduit.v1.UserService",
        "conduit.v1.ProfileService",
        "conduit.v1.ArticleService",
        "conduit.v1.CommentService",
        "conduit.v1.TagService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "conduit.v1.Nope".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("an update").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
}

/// `ListServices` over one reflection version; v1 and v1alpha have identical shapes in
/// different modules.
macro_rules! reflected_services {
    ($version:ident, $server:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new($server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect(stringify!($version))
            .into_inner();
        match responses
            .next()
            .await
            .expect("response")
            .expect("ok")
            .message_response
        {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("unexpected {other:?}"),
        }
    }};
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    let server = TestServer::start().await;
    for services in [
        reflected_services!(v1, server),
        reflected_services!(v1alpha, server),
    ] {
        for expected in [
            "conduit.v1.UserService",
            "conduit.v1.ProfileService",
            "conduit.v1.ArticleService",
            "conduit.v1.CommentService",
            "conduit.v1.TagService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }
}

#[tokio::test]
async fn one_fallback_per_protocol() {
    let server = TestServer::start().await;
    let http = server.http();

    let missing = http
        .get(server.url("/api/nope"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json::<Value>().await.expect("json"),
        json!({"errors": {"route": ["not found"]}})
    );

    let wrong_method = http
        .delete(server.url("/api/users"))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.json::<Value>().await.expect("json")["errors"].is_object());

    // Unknown service and unknown method of a known service: UNIMPLEMENTED, not a
    // transport error or an HTTP 404.
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    for path in [
        "/conduit.v1.NoSuchService/Get",
        "/conduit.v1.UserService/NoSuchMethod",
    ] {
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary::<_, pb::LoginResponse, _>(
                tonic::Request::new(pb::LoginRequest::default()),
                path.parse().expect("path"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("unimplemented");
        assert_eq!(status.code(), Code::Unimplemented, "{path}");
    }
}

#[tokio::test]
async fn request_id_is_echoed_on_both_protocols_and_logged() {
    let server = TestServer::start().await;

    let given = server
        .http()
        .get(server.url("/api/user"))
        .header("x-request-id", "rest-req-42")
        .send()
        .await
        .expect("send");
    assert_eq!(given.headers()["x-request-id"], "rest-req-42");
    let generated = server
        .http()
        .get(server.url("/api/user"))
        .send()
        .await
        .expect("send");
    let generated_id = generated.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(generated_id.len(), 36, "a UUID: {generated_id}");

    let mut users = UserServiceClient::new(server.channel().await);
    let mut request = tonic::Request::new(pb::LoginRequest {
        email: "nobody@example.com".into(),
        password: "whatever".into(),
        otp: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-req-7".parse().expect("meta"));
    let status = users.login(request).await.expect_err("unknown user");
    assert_eq!(
        status.metadata().get("x-request-id").expect("echoed"),
        "grpc-req-7"
    );
    let ok = users
        .register(pb::RegisterRequest {
            username: unique("rid"),
            email: format!("{}@example.com", unique("rid")),
            password: "password".into(),
        })
        .await
        .expect("register");
    assert!(
        ok.metadata().get("x-request-id").is_some(),
        "generated id echoed on success"
    );

    // Access lines are JSON (the harness fails on any other line) and carry the id and
    // the real gRPC outcome read from the trailers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    let line = |id: &str| {
        logs.iter()
            .find(|l| l["target"] == "access" && l["request_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no access line for {id}: {logs:?}"))
    };
    let rest = line("rest-req-42");
    assert_eq!(rest["status"], 401);
    assert_eq!(rest["protocol"], "http");
    let grpc = line("grpc-req-7");
    assert_eq!(grpc["protocol"], "grpc");
    assert_eq!(grpc["grpc_code"], "UNAUTHENTICATED");
    assert_eq!(grpc["operation"], "conduit.v1.UserService/Login");
    assert!(
        grpc["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "{grpc}"
    );
    assert_eq!(grpc["path"], "/conduit.v1.UserService/Login");
}

#[tokio::test]
async fn body_limit_on_both_protocols() {
    let server = TestServer::start_with(&[("CONDUIT__SERVER__BODY_LIMIT_BYTES", "1024")]).await;
    let big = "x".repeat(4096);

    let declared = server
        .http()
        .post(server.url("/api/users"))
        .json(&json!({"user": {"username": big, "email": "a@b.c", "password": "p"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        declared.json::<Value>().await.expect("json"),
        json!({"errors": {"body": ["is too large"]}})
    );

    // Streamed without content-length: caught while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(br#"{"user": {"username": ""#.to_vec()),
        Ok(big.clone().into_bytes()),
        Ok(br#""}}"#.to_vec()),
    ];
    let streamed = server
        .http()
        .post(server.url("/api/users"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(tokio_stream::iter(chunks)))
        .send()
        .await
        .expect("send");
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let mut users = UserServiceClient::new(server.channel().await);
    let status = users
        .register(pb::RegisterRequest {
            username: big,
            email: "a@b.c".into(),
            password: "p".into(),
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // The server is unharmed.
    let ok = server
        .http()
        .get(server.url("/livez"))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn deadlines_answer_in_each_protocol() {
    // Registration hashes a password (milliseconds of CPU): far longer than 1ms.
    let server = TestServer::start_with(&[("CONDUIT__SERVER__REQUEST_TIMEOUT", "1ms")]).await;
    let timed_out = server
        .http()
        .post(server.url("/api/users"))
        .json(&json!({"user": {"username": "slow", "email": "slow@x.io", "password": "slowslow"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(timed_out.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        timed_out.json::<Value>().await.expect("json"),
        json!({"errors": {"request": ["timed out"]}})
    );

    // tonic's (and grpcio's) client enforces its own deadline and would report CANCELLED
    // first, so send the raw HTTP/2 call: the outcome must come from the server.
    let roomy = TestServer::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let name = unique("deadline");
    let response = h2
        .post(roomy.url("/conduit.v1.UserService/Register"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "1m")
        .body(grpc_frame(&pb::RegisterRequest {
            username: name.clone(),
            email: format!("{name}@x.io"),
            password: "password".into(),
        }))
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "gRPC errors are HTTP 200"
    );
    assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
}

/// CORS headers go on every answer a browser could read: anything sent with `Origin`,
/// and every GET. A gRPC call without `Origin` comes from no browser (browsers send
/// `Origin` on every request but GET and HEAD) and gets none: they would only cost
/// header encoding.
#[tokio::test]
async fn cors_headers_only_where_a_browser_reads_the_answer() {
    let server = TestServer::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let list_tags = |origin: Option<&str>| {
        let mut call = h2
            .post(server.url("/conduit.v1.TagService/ListTags"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(grpc_frame(&pb::ListTagsRequest {}));
        if let Some(origin) = origin {
            call = call.header("origin", origin);
        }
        call.send()
    };
    let from_a_service = list_tags(None).await.expect("grpc call");
    assert_eq!(from_a_service.status(), StatusCode::OK);
    let cors: Vec<_> = from_a_service
        .headers()
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "{cors:?}");
    assert!(from_a_service.headers().contains_key("x-request-id"));

    let from_a_page = list_tags(Some("http://app.example.com"))
        .await
        .expect("grpc call");
    assert_eq!(from_a_page.headers()["access-control-allow-origin"], "*");
    assert!(
        from_a_page
            .headers()
            .contains_key("access-control-expose-headers")
    );

    let get = server
        .http()
        .get(server.url("/api/tags"))
        .send()
        .await
        .expect("get");
    assert_eq!(get.headers()["access-control-allow-origin"], "*");
}

/// Splits a gRPC-Web response body into its data messages and its trailer block.
fn grpc_web_parse(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let chunk = body[5..5 + len].to_vec();
        if flag & 0x80 != 0 {
            trailers = String::from_utf8(chunk).expect("trailers are text");
        } else {
            messages.push(chunk);
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_from_a_browser_origin() {
    let server = TestServer::start().await;
    let http = server.http();
    let origin = "http://app.example.com";

    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            server.url("/conduit.v1.UserService/Register"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,authorization",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        allowed.contains("x-grpc-web") && allowed.contains("authorization"),
        "{allowed}"
    );

    let name = unique("web");
    let response = http
        .post(server.url("/conduit.v1.UserService/Register"))
        .header("origin", origin)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("accept-encoding", "gzip")
        .body(grpc_frame(&pb::RegisterRequest {
            username: name.clone(),
            email: format!("{name}@example.com"),
            password: "browserpw".into(),
        }))
        .send()
        .await
        .expect("grpc-web call");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/grpc-web")
    );
    assert!(
        headers.get("content-encoding").is_none(),
        "gRPC-Web frames are never gzipped by the stack"
    );
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .expect("ascii");
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
    let (messages, trailers) = grpc_web_parse(&response.bytes().await.expect("body"));
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let reply = pb::RegisterResponse::decode(messages[0].as_slice()).expect("decode");
    assert_eq!(reply.user.expect("user").username, name);

    // An error travels as a trailers-only response readable by the browser.
    let error = http
        .post(server.url("/conduit.v1.UserService/GetCurrentUser"))
        .header("content-type", "application/grpc-web+proto")
        .body(grpc_frame(&pb::GetCurrentUserRequest {}))
        .send()
        .await
        .expect("grpc-web call");
    let grpc_status = error
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    let body = error.bytes().await.expect("body");
    let (_, trailers) = grpc_web_parse(&body);
    assert!(
        grpc_status == "16" || trailers.contains("grpc-status:16"),
        "{grpc_status} {trailers}"
    );
}

#[tokio::test]
async fn rest_is_gzipped_and_served_over_h2c_too() {
    let server = TestServer::start().await;
    let gz = server
        .http()
        .get(server.url("/api/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("send");
    assert_eq!(
        gz.headers()
            .get("content-encoding")
            .map(|v| v.to_str().expect("ascii")),
        Some("gzip")
    );

    // REST over HTTP/2 prior knowledge on the same port gRPC uses.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2.get(server.url("/readyz")).send().await.expect("h2c");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn docs_follow_the_proxy_prefix() {
    let server = TestServer::start_with(&[(
        "CONDUIT__DOCS__SERVERS",
        "https://api.example.com,https://staging.example.com",
    )])
    .await;
    let http = server.http();
    let doc: Value = http
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let urls: Vec<&str> = doc["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["url"].as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "/",
            "https://api.example.com",
            "https://staging.example.com"
        ]
    );
    assert!(doc["paths"]["/api/users/login"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["Token"].is_object());

    let proxied: Value = http
        .get(server.url("/api/openapi.json"))
        .header("x-forwarded-prefix", "/conduit")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(proxied["servers"][0]["url"], "/conduit");

    let ui = http
        .get(server.url("/api/docs/"))
        .send()
        .await
        .expect("send");
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.expect("html").contains("swagger"));
    let config = http
        .get(server.url("/api/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("send");
    assert!(
        config.text().await.expect("js").contains("../openapi.json"),
        "relative spec URL"
    );
}

#[tokio::test]
async fn base_path_is_stripped_before_routing() {
    let server = TestServer::start_with(&[("CONDUIT__SERVER__BASE_PATH", "/conduit")]).await;
    let http = server.http();
    assert_eq!(
        http.get(server.url("/conduit/livez"))
            .send()
            .await
            .expect("send")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(server.url("/livez"))
            .send()
            .await
            .expect("send")
            .status(),
        StatusCode::OK
    );
    let doc: Value = http
        .get(server.url("/conduit/api/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["servers"][0]["url"], "/conduit");
    let registered = http
        .post(server.url("/conduit/api/users"))
        .json(&json!({"user": {"username": "prefixed", "email": "prefixed@x.io", "password": "prefixed"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(registered.status(), StatusCode::CREATED);
}
