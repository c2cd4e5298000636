//! Identity in depth, black-box on both protocols: sessions with rotating refresh tokens,
//! logout and revocation, password changes, TOTP second factors, signing-key rotation,
//! and the deny-by-default policy table.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{Rest, TestDb, TestServer, grpc_request, tokens_of, unique};
use conduit::{
    auth::{TokenKeys, otp},
    config::AuthSettings,
    operations::Access,
    proto::conduit::v1::{
        self as pb, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
    },
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

const SECRET: &str = "identity-test-secret-0123456789-abcdefghij";

async fn server() -> TestServer {
    TestServer::start_with(&[("CONDUIT__AUTH__JWT_SECRET", SECRET)]).await
}

async fn login(rest: &Rest, name: &str, password: &str, otp: Option<&str>) -> (StatusCode, Value) {
    let mut user = json!({"email": format!("{name}@example.com"), "password": password});
    if let Some(otp) = otp {
        user["otp"] = otp.into();
    }
    rest.post("/api/users/login", None, json!({ "user": user }))
        .await
}

async fn refresh(rest: &Rest, refresh_token: &str) -> (StatusCode, Value) {
    rest.post(
        "/api/users/refresh",
        None,
        json!({ "refreshToken": refresh_token }),
    )
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn refresh_rotates_and_reuse_ends_the_whole_session() {
    // No grace period: any second presentation is reuse (the grace is tested in
    // tests/identity_edges.rs).
    let server = TestServer::start_with(&[
        ("CONDUIT__AUTH__JWT_SECRET", SECRET),
        ("CONDUIT__AUTH__REFRESH_REUSE_GRACE", "0s"),
    ])
    .await;
    let rest = Rest::new(&server);
    let name = unique("rot");
    let (token, first) = rest.register_session(&name).await;
    assert_ne!(token, first);

    let (status, body) = refresh(&rest, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["username"], name.as_str());
    let (newer_token, second) = tokens_of(&body);
    assert_ne!(second, first, "a new refresh token each time");
    for t in [&token, &newer_token] {
        let (status, _) = rest.get("/api/user", Some(t)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "access tokens of a standing session work"
        );
    }

    // The first token again: someone holds a copy. The session ends for everyone.
    let (status, body) = refresh(&rest, &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["errors"]["refreshToken"].is_array(), "{body}");
    let (status, body) = refresh(&rest, &second).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = rest.get("/api/user", Some(&newer_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body, json!({"errors": {"token": ["has been revoked"]}}));

    // Garbage and missing tokens are refused without touching anything.
    let (status, _) = refresh(&rest, "not-a-refresh-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = rest.post("/api/users/refresh", None, json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // An idempotency key does not make a refresh replayable: credentials are never kept.
    let (_, keyed) = rest.register_session(&unique("key")).await;
    let send = || {
        server
            .http()
            .post(server.url("/api/users/refresh"))
            .header("idempotency-key", "same-key")
            .json(&json!({ "refreshToken": keyed }))
            .send()
    };
    let first_answer = send().await.expect("send");
    assert_eq!(first_answer.status(), StatusCode::OK);
    let retry = send().await.expect("send");
    assert_eq!(retry.status(), StatusCode::UNAUTHORIZED, "not replayed");
    assert!(retry.headers().get("idempotent-replayed").is_none());

    // The same over gRPC, reuse included.
    let channel = server.channel().await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let (_, refresh_token) = rest.register_session(&unique("rotg")).await;
    let user = auth
        .refresh(pb::RefreshRequest {
            refresh_token: refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .user
        .expect("user");
    assert!(!user.token.is_empty() && !user.refresh_token.is_empty());
    let status = auth
        .refresh(pb::RefreshRequest { refresh_token })
        .await
        .expect_err("reused");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = auth
        .refresh(pb::RefreshRequest {
            refresh_token: user.refresh_token,
        })
        .await
        .expect_err("session ended");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn logout_and_revocation_end_sessions_on_both_protocols() {
    let server = server().await;
    let rest = Rest::new(&server);
    let name = unique("out");
    let (token_a, refresh_a) = rest.register_session(&name).await;
    let email = format!("{name}@example.com");
    let (token_b, _) = rest.login(&email, "password123").await;
    let (token_c, _) = rest.login(&email, "password123").await;

    let (status, body) = rest.get("/api/user/sessions", Some(&token_b)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sessions = body["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 3, "{body}");
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{body}"
    );
    assert!(
        sessions.iter().all(|s| s["ip"] == "127.0.0.1"),
        "the client's address is kept: {body}"
    );
    let id_b = sessions
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["id"].as_str())
        .expect("id")
        .to_string();

    // gRPC logout of session A: its access and refresh tokens stop working everywhere.
    let channel = server.channel().await;
    let mut auth = AuthServiceClient::new(channel.clone());
    auth.logout(grpc_request(pb::LogoutRequest {}, Some(&token_a)))
        .await
        .expect("logout");
    let (status, body) = rest.get("/api/user", Some(&token_a)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let status = UserServiceClient::new(channel.clone())
        .get_current_user(grpc_request(pb::GetCurrentUserRequest {}, Some(&token_a)))
        .await
        .expect_err("logged out");
    assert_eq!(status.code(), Code::Unauthenticated);
    let (status, _) = refresh(&rest, &refresh_a).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Session C revokes B over REST; C goes on.
    let (status, body) = rest
        .delete(&format!("/api/user/sessions/{id_b}"), Some(&token_c))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = rest.get("/api/user", Some(&token_b)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = rest.get("/api/user", Some(&token_c)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = rest
        .delete(&format!("/api/user/sessions/{id_b}"), Some(&token_c))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already ended: {body}");

    // Nobody ends another user's session.
    let other = rest.register(&unique("oth")).await;
    let sessions = auth
        .list_sessions(grpc_request(pb::ListSessionsRequest {}, Some(&token_c)))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].current);
    let status = auth
        .revoke_session(grpc_request(
            pb::RevokeSessionRequest {
                id: sessions[0].id.clone(),
            },
            Some(&other),
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(status.code(), Code::NotFound);
    let (status, _) = rest
        .post("/api/users/logout", Some(&token_c), json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = rest.get("/api/user", Some(&token_c)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_only() {
    let server = server().await;
    let rest = Rest::new(&server);
    let name = unique("pwd");
    let (token, old_refresh) = rest.register_session(&name).await;
    let (other_token, other_refresh) = rest
        .login(&format!("{name}@example.com"), "password123")
        .await;

    let (status, body) = rest
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"password": "a-new-password"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (new_token, new_refresh) = tokens_of(&body);

    // This session goes on, with the token it had and the one it got.
    for t in [&token, &new_token] {
        let (status, body) = rest.get("/api/user", Some(t)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = rest.get("/api/user", Some(&other_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another session: {body}");
    for (t, why) in [
        (&old_refresh, "issued before the change"),
        (&other_refresh, "another session"),
    ] {
        let (status, _) = refresh(&rest, t).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
    }
    let (status, _) = login(&rest, &name, "password123", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login(&rest, &name, "a-new-password", None).await;
    assert_eq!(status, StatusCode::OK);
    // Presenting the superseded refresh token did not end the session: it was replaced
    // by the password change, not copied.
    let (status, body) = refresh(&rest, &new_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = rest.get("/api/user", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn totp_enrollment_login_replay_and_recovery() {
    let server = server().await;
    let rest = Rest::new(&server);
    let name = unique("otp");
    let token = rest.register(&name).await;

    let (status, body) = rest.post("/api/user/totp", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let secret = body["secret"].as_str().expect("secret").to_string();
    let uri = body["otpauthUri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=conduit"), "{uri}");

    // Not on until confirmed.
    let (status, _) = login(&rest, &name, "password123", None).await;
    assert_eq!(status, StatusCode::OK);
    let wrong = if otp::code_at(&secret, now()).expect("code") == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (status, body) = rest
        .post(
            "/api/user/totp/confirm",
            Some(&token),
            json!({"code": wrong}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let confirm_code = otp::code_at(&secret, now()).expect("code");
    let (status, body) = rest
        .post(
            "/api/user/totp/confirm",
            Some(&token),
            json!({ "code": confirm_code }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let recovery: Vec<String> = body["recoveryCodes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(recovery.len(), 10);
    let (status, body) = rest.post("/api/user/totp", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "already on: {body}");

    // Password alone is not enough any more; the answer says what is missing.
    let (status, body) = login(&rest, &name, "password123", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"errors": {"otp": ["is required"]}}));
    // A wrong password says nothing about the second factor.
    let (status, body) = login(&rest, &name, "wrong-password", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["errors"]["otp"].is_null(), "{body}");
    // The code confirmation used is spent.
    let (status, body) = login(&rest, &name, "password123", Some(&confirm_code)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "replayed: {body}");
    assert_eq!(body, json!({"errors": {"otp": ["is invalid"]}}));
    // The next step's code is within the ±1 step window: accepted once.
    let next = otp::code_at(&secret, now() + 30).expect("code");
    let (status, body) = login(&rest, &name, "password123", Some(&next)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = login(&rest, &name, "password123", Some(&next)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a code works once");

    // gRPC: the same rule, and a recovery code stands in for a lost authenticator, once.
    let mut users = UserServiceClient::new(server.channel().await);
    let grpc_login = |otp: &str| pb::LoginRequest {
        email: format!("{name}@example.com"),
        password: "password123".into(),
        otp: otp.into(),
    };
    let status = users.login(grpc_login("")).await.expect_err("otp required");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("otp"), "{}", status.message());
    users
        .login(grpc_login(&recovery[0]))
        .await
        .expect("recovery code");
    let status = users
        .login(grpc_login(&recovery[0]))
        .await
        .expect_err("recovery codes are single-use");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Disabling needs a good code; then the password is enough again.
    let (status, _) = rest
        .call(
            reqwest::Method::DELETE,
            "/api/user/totp",
            Some(&token),
            Some(json!({"code": wrong})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = rest
        .call(
            reqwest::Method::DELETE,
            "/api/user/totp",
            Some(&token),
            Some(json!({"code": recovery[1]})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = login(&rest, &name, "password123", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A token with these claims, signed with `secret` under key id `kid` (what an attacker
/// who had a key, or none, could make).
fn forge(header: &Value, claims: &Value, secret: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("sign");
    format!("{signing_input}.{signature}")
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

/// Authorization header values that must never authenticate, each with its name.
fn bad_credentials(valid: &str) -> Vec<(&'static str, Option<String>)> {
    let kid = TokenKeys::new(&AuthSettings {
        jwt_secret: SECRET.into(),
        ..AuthSettings::default()
    })
    .current_key_id()
    .to_string();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let claims = claims_of(valid);
    let mut expired = claims.clone();
    expired["iat"] = json!(1_000);
    expired["exp"] = json!(1_100);
    let mut elevated = claims.clone();
    elevated["sub"] = json!("1");
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(elevated.to_string()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    vec![
        (
            "expired",
            Some(format!("Token {}", forge(&header, &expired, SECRET))),
        ),
        (
            "signed with another key",
            Some(format!(
                "Token {}",
                forge(&header, &claims, "some-other-secret-0123456789-abcdefgh")
            )),
        ),
        ("alg none", Some(format!("Token {none}"))),
        ("tampered payload", Some(format!("Token {tampered}"))),
        ("malformed header", Some("Token".to_string())),
        ("wrong scheme", Some(format!("Basic {valid}"))),
        ("not a JWT", Some("Token not.a.jwt".to_string())),
    ]
}

#[tokio::test]
async fn every_protected_operation_refuses_every_bad_credential() {
    let server = server().await;
    let rest = Rest::new(&server);
    let valid = rest.register(&unique("pol")).await;
    let mut cases = vec![("no token", None)];
    cases.extend(bad_credentials(&valid));
    let operations = conduit::server::operations();
    let stated: std::collections::HashSet<&str> = operations.names().collect();

    // Every REST operation of the served document.
    let (status, document) = rest.get("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let method: reqwest::Method = method.to_uppercase().parse().expect("method");
            let operation = format!("{method} {path}");
            assert!(
                stated.contains(operation.as_str()),
                "{operation} has no rule"
            );
            let access = operations.rest_access(&method, path);
            let concrete = path
                .replace("{username}", "nobody")
                .replace("{slug}", "no-such-article")
                .replace("{id}", "1");
            for (case, header) in &cases {
                if access == Access::Public || (access == Access::Optional && header.is_none()) {
                    continue;
                }
                let mut request = server
                    .http()
                    .request(method.clone(), server.url(&concrete))
                    .json(&json!({}));
                if let Some(h) = header {
                    request = request.header("authorization", h);
                }
                let response = request.send().await.expect("send");
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{operation} with {case}: {body}"
                );
                assert!(body["errors"]["token"].is_array(), "{operation}: {body}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked} REST checks");

    // Every gRPC method of the descriptor set, over raw HTTP/2 so nothing but the
    // credential varies (an empty message decodes as any request type).
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
        conduit::proto::FILE_DESCRIPTOR_SET,
    )
    .expect("descriptors");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut checked = 0;
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                assert!(stated.contains(path.as_str()), "{path} has no rule");
                let access = operations.grpc_access(&path);
                for (case, header) in &cases {
                    if access == Access::Public || (access == Access::Optional && header.is_none())
                    {
                        continue;
                    }
                    let mut request = h2
                        .post(server.url(&path))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(vec![0u8, 0, 0, 0, 0]);
                    if let Some(h) = header {
                        request = request.header("authorization", h);
                    }
                    let response = request.send().await.expect("send");
                    assert_eq!(
                        response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok()),
                        Some("16"),
                        "{path} with {case}: {:?}",
                        response.headers()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 100, "{checked} gRPC checks");
}

#[tokio::test]
async fn tokens_of_the_previous_key_work_during_its_grace_period_only() {
    let old_secret = "the-old-signing-key-0123456789-abcdefghij";
    let new_secret = "the-new-signing-key-0123456789-abcdefghij";
    // One database for three servers in turn; only this handle drops it.
    let db = TestDb::new().await;
    let first =
        TestServer::start_on(db.share(), &[("CONDUIT__AUTH__JWT_SECRET", old_secret)]).await;
    let old_token = Rest::new(&first).register(&unique("kid")).await;
    drop(first);

    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let rotated = TestServer::start_on(
        db.share(),
        &[
            ("CONDUIT__AUTH__JWT_SECRET", new_secret),
            ("CONDUIT__AUTH__PREVIOUS_JWT_SECRET", old_secret),
            ("CONDUIT__AUTH__PREVIOUS_JWT_SECRET_UNTIL", &later),
        ],
    )
    .await;
    let rest = Rest::new(&rotated);
    let (status, body) = rest.get("/api/user", Some(&old_token)).await;
    assert_eq!(status, StatusCode::OK, "during the grace period: {body}");
    let reissued = body["user"]["token"].as_str().expect("token").to_string();
    let kid = |token: &str| {
        let header = token.split('.').next().expect("header");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
        header["kid"].as_str().expect("kid").to_string()
    };
    assert_ne!(
        kid(&reissued),
        kid(&old_token),
        "new tokens use the new key"
    );
    drop(rotated);

    let earlier = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let after = TestServer::start_on(
        db.share(),
        &[
            ("CONDUIT__AUTH__JWT_SECRET", new_secret),
            ("CONDUIT__AUTH__PREVIOUS_JWT_SECRET", old_secret),
            ("CONDUIT__AUTH__PREVIOUS_JWT_SECRET_UNTIL", &earlier),
        ],
    )
    .await;
    let rest = Rest::new(&after);
    let (status, _) = rest.get("/api/user", Some(&old_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "after the grace period");
    let (status, _) = rest.get("/api/user", Some(&reissued)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn ended_sessions_are_purged_and_expired_ones_refused() {
    let server = TestServer::start_with(&[
        ("CONDUIT__AUTH__JWT_SECRET", SECRET),
        ("CONDUIT__AUTH__SESSION_TTL", "2s"),
        ("CONDUIT__JOBS__CLEANUP_INTERVAL", "1s"),
    ])
    .await;
    let rest = Rest::new(&server);
    let (token, refresh_token) = rest.register_session(&unique("exp")).await;
    let (status, _) = rest.get("/api/user", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let db = sea_orm::Database::connect(&server.db.url)
        .await
        .expect("db");
    let count = || async {
        use sea_orm::{ConnectionTrait, Statement};
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM sessions",
            ))
            .await
            .expect("count")
            .expect("row");
        row.try_get::<i64>("", "n").expect("n")
    };
    assert_eq!(count().await, 1);
    // A guard, not a timing expectation: cleanup runs every second.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count().await > 0 {
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = rest.get("/api/user", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = refresh(&rest, &refresh_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn no_credential_or_secret_reaches_logs_metrics_or_error_bodies() {
    let (collector, endpoint) = common::Collector::start().await;
    let server = TestServer::start_with(&[
        ("CONDUIT__AUTH__JWT_SECRET", SECRET),
        ("CONDUIT__AUTH__REFRESH_REUSE_GRACE", "0s"),
        ("CONDUIT__TELEMETRY__LOG_LEVEL", "debug"),
        ("CONDUIT__TELEMETRY__OTLP_ENDPOINT", &endpoint),
    ])
    .await;
    let rest = Rest::new(&server);
    let name = unique("leak");
    let password = "a-memorable-password-9f8e7d";
    let mut secrets = vec![SECRET.to_string(), password.to_string()];
    let mut answers = Vec::new();

    let (status, body) = rest
        .post(
            "/api/users",
            None,
            json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": password}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (token, first_refresh) = tokens_of(&body);
    let (_, body) = refresh(&rest, &first_refresh).await;
    let (token2, refresh2) = tokens_of(&body);
    let totp = rest.enable_totp(&token2).await;
    let (totp_secret, code, recovery) = (totp.secret, totp.spent_code, totp.recovery_codes);
    let next = otp::code_at(&totp_secret, now() + 30).expect("code");
    // Failures of every kind, whose answers and logs must not echo what was sent.
    answers.push(login(&rest, &name, "wrong-password-5a4b3c", None).await.1);
    answers.push(login(&rest, &name, password, None).await.1);
    answers.push(login(&rest, &name, password, Some(&code)).await.1);
    answers.push(login(&rest, &name, password, Some(&next)).await.1);
    answers.push(login(&rest, &name, password, Some(&recovery[2])).await.1);
    answers.push(refresh(&rest, &first_refresh).await.1);
    answers.push(rest.get("/api/user", Some(&token)).await.1);
    answers.push(rest.get("/api/user", Some(&format!("{token}x"))).await.1);
    let status = UserServiceClient::new(server.channel().await)
        .login(pb::LoginRequest {
            email: format!("{name}@example.com"),
            password: password.into(),
            otp: recovery[3].clone(),
        })
        .await
        .expect("recovery login over gRPC");
    drop(status);
    let metrics = server.metrics().await;

    secrets.extend([
        token,
        first_refresh,
        token2,
        refresh2,
        totp_secret,
        code,
        next,
        "wrong-password-5a4b3c".into(),
    ]);
    secrets.extend(recovery);
    // Shutdown flushes the log writer and the span exporter.
    server.terminate();
    let server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        assert!(server.wait().success());
        server
    })
    .await
    .expect("join");
    let logs = serde_json::to_string(&server.logs()).expect("logs");
    let spans = format!("{:?}", collector.0.lock().expect("spans"));
    assert!(spans.contains("/api/users/refresh"), "spans were exported");
    assert!(logs.len() > 1_000, "logs were captured");
    let answers = serde_json::to_string(&answers).expect("answers");
    for secret in &secrets {
        for (place, text) in [
            ("logs", &logs),
            ("metrics", &metrics),
            ("spans", &spans),
            ("error bodies", &answers),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "{place} contain a credential ({} chars)",
                secret.len()
            );
        }
    }
    // Also no shorter fragments of the refresh tokens (their secret part).
    for token in secrets.iter().filter(|s| s.contains('.') && s.len() > 60) {
        if let Some(last) = token.rsplit('.').next().filter(|p| p.len() >= 32) {
            assert!(
                !logs.contains(last),
                "a token's signature or secret is logged"
            );
        }
    }
}
