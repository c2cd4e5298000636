//! Identity at its edges, black-box on both protocols and both databases: the RealWorld
//! password-change flow, sign-ins as long as their session, step-up for credential
//! changes, refresh-token grace, idempotency after authentication, bounds, credentials
//! never stored or echoed, one notion of "same account", and identifiers people can trust.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{Grpc, Rest, TestServer, grpc_request, tokens_of, unique};
use conduit::{
    auth::otp,
    proto::conduit::v1::{
        self as pb, article_service_client::ArticleServiceClient,
        auth_service_client::AuthServiceClient, comment_service_client::CommentServiceClient,
        user_service_client::UserServiceClient,
    },
};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const SECRET: &str = "identity-edges-secret-0123456789-abcdefghij";

async fn server_with(env: &[(&str, &str)]) -> TestServer {
    let mut all = vec![("CONDUIT__AUTH__JWT_SECRET", SECRET)];
    all.extend_from_slice(env);
    TestServer::start_with(&all).await
}

fn email(name: &str) -> String {
    format!("{name}@example.com")
}

async fn login(rest: &Rest, email: &str, password: &str) -> (StatusCode, Value) {
    rest.post(
        "/api/users/login",
        None,
        json!({"user": {"email": email, "password": password}}),
    )
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

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

/// The status's `ErrorInfo` reason.
fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"))
        .reason
}

async fn sql(server: &TestServer) -> sea_orm::DatabaseConnection {
    sea_orm::Database::connect(&server.db.url)
        .await
        .expect("connect")
}

async fn count(db: &sea_orm::DatabaseConnection, query: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), query))
        .await
        .expect("count")
        .expect("row")
        .try_get::<i64>("", "n")
        .expect("n")
}

#[tokio::test]
async fn the_realworld_flow_changes_the_password_twice_with_one_token() {
    let server = server_with(&[]).await;
    let rest = Rest::new(&server);
    let name = unique("rw");
    rest.register(&name).await;
    let (token, _) = rest.login(&email(&name), "password123").await;
    let (other, _) = rest.login(&email(&name), "password123").await;

    for password in ["second-password", "third-password"] {
        let (status, body) = rest
            .put(
                "/api/user",
                Some(&token),
                json!({"user": {"password": password}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answered = body["user"]["token"].as_str().expect("token");
        for t in [token.as_str(), answered] {
            let (status, body) = rest.get("/api/user", Some(t)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let (status, _) = rest.get("/api/user", Some(&other)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another session ended");
    let (status, _) = login(&rest, &email(&name), "third-password").await;
    assert_eq!(status, StatusCode::OK);

    // gRPC: the same, twice with one token.
    let grpc = Grpc::new(&server).await;
    let mut users = UserServiceClient::new(grpc.channel());
    let token = grpc.register(&unique("rwg")).await;
    for password in ["second-password", "third-password"] {
        users
            .update_user(grpc_request(
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        password: password.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Some(&token),
            ))
            .await
            .expect("update");
        users
            .get_current_user(grpc_request(pb::GetCurrentUserRequest {}, Some(&token)))
            .await
            .expect("the token goes on");
    }
}

#[tokio::test]
async fn a_sign_in_lasts_as_long_as_its_session() {
    // Defaults: the token expires when the session does (auth.session_ttl, 30 days).
    let server = server_with(&[]).await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("long")).await;
    let exp = claims_of(&token)["exp"].as_u64().expect("exp");
    let thirty_days = 30 * 24 * 3600;
    assert!(
        exp + 5 >= now() + thirty_days && exp <= now() + thirty_days + 5,
        "exp {exp} is the session's end"
    );

    // Short limits: used every 500 ms a session outlives its idle timeout, but not its
    // absolute lifetime; left alone it ends after the idle timeout.
    let server = server_with(&[
        ("CONDUIT__AUTH__SESSION_IDLE_TIMEOUT", "2s"),
        ("CONDUIT__AUTH__SESSION_TTL", "5s"),
    ])
    .await;
    let rest = Rest::new(&server);
    let busy = rest.register(&unique("busy")).await;
    let (idle, idle_refresh) = rest.register_session(&unique("idle")).await;
    let started = std::time::Instant::now();
    let mut ended_at = None;
    while started.elapsed() < Duration::from_secs(8) {
        let (status, body) = rest.get("/api/user", Some(&busy)).await;
        if status != StatusCode::OK {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(body, json!({"errors": {"token": ["has expired"]}}));
            ended_at = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ended_at = ended_at.expect("the absolute lifetime ends a busy session");
    assert!(
        ended_at >= Duration::from_millis(4_000),
        "used all along, it lived past its idle timeout to near its end ({ended_at:?})"
    );
    let (status, body) = rest.get("/api/user", Some(&idle)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "idle: {body}");
    let (status, _) = refresh(&rest, &idle_refresh).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an idle session cannot refresh"
    );

    // gRPC sees the same expiry.
    let status = UserServiceClient::new(server.channel().await)
        .get_current_user(grpc_request(pb::GetCurrentUserRequest {}, Some(&idle)))
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "TOKEN_EXPIRED");
}

#[tokio::test]
async fn credential_changes_need_a_recent_login_and_the_second_factor() {
    let server = server_with(&[("CONDUIT__AUTH__REAUTH_WINDOW", "4s")]).await;
    let rest = Rest::new(&server);
    let name = unique("step");
    let (token, refresh_token) = rest.register_session(&name).await;

    // Just signed in: email changes go through, and a profile field never needs more.
    let moved = format!("moved-{name}@example.com");
    let (status, body) = rest
        .put("/api/user", Some(&token), json!({"user": {"email": moved}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    tokio::time::sleep(Duration::from_millis(4_300)).await;
    // A refresh gives new tokens but is no new login.
    let (status, body) = refresh(&rest, &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (refreshed, _) = tokens_of(&body);
    for t in [&token, &refreshed] {
        for change in [
            json!({"user": {"password": "stolen-token-password"}}),
            json!({"user": {"email": format!("thief-{name}@example.com")}}),
        ] {
            let (status, body) = rest.put("/api/user", Some(t), change).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(
                body,
                json!({"errors": {"session": ["needs a recent login to change credentials; log in again"]}})
            );
        }
    }
    let (status, body) = rest
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"bio": "still mine"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Nothing changed: the old password and the email still sign in.
    let (status, body) = login(&rest, &moved, "password123").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (fresh, _) = tokens_of(&body);

    // Second-factor changes need the same.
    let (status, body) = rest.post("/api/user/totp", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let grpc = server.channel().await;
    let status = AuthServiceClient::new(grpc.clone())
        .enroll_totp(grpc_request(pb::EnrollTotpRequest {}, Some(&token)))
        .await
        .expect_err("stale login");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "REAUTHENTICATION_REQUIRED");

    // With TOTP on, a fresh login still needs a current code for credential changes.
    let secret = rest.enable_totp(&fresh).await.secret;
    let (status, body) = rest
        .put(
            "/api/user",
            Some(&fresh),
            json!({"user": {"password": "a-new-password"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body, json!({"errors": {"otp": ["is required"]}}));
    let mut users = UserServiceClient::new(grpc);
    let status = users
        .update_user(grpc_request(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    email: format!("grpc-{name}@example.com"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Some(&fresh),
        ))
        .await
        .expect_err("no otp");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "OTP_REQUIRED");
    let code = otp::code_at(&secret, now() + 30).expect("code");
    users
        .update_user(grpc_request(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    password: "a-new-password".into(),
                    ..Default::default()
                }),
                otp: code,
                ..Default::default()
            },
            Some(&fresh),
        ))
        .await
        .expect("a recent login and a current code");
}

#[tokio::test]
async fn a_refresh_token_presented_again_within_the_grace_gets_the_same_successor() {
    let server = server_with(&[("CONDUIT__AUTH__REFRESH_REUSE_GRACE", "1s")]).await;
    let rest = Rest::new(&server);
    let (_, first) = rest.register_session(&unique("tabs")).await;

    // Eight tabs refresh at once with the same token: every one gets the same successor.
    let answers = futures_util::future::join_all((0..8).map(|_| refresh(&rest, &first))).await;
    let mut successors = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        successors.insert(tokens_of(body).1);
    }
    assert_eq!(successors.len(), 1, "one successor: {successors:?}");
    let second = successors.into_iter().next().expect("successor");
    let (token, _) = tokens_of(&answers[0].1);

    // The same over gRPC, concurrently, for a token of its own.
    let auth = AuthServiceClient::new(server.channel().await);
    let (_, grpc_first) = rest.register_session(&unique("tabsg")).await;
    let calls = (0..4).map(|_| {
        let mut auth = auth.clone();
        let refresh_token = grpc_first.clone();
        async move { auth.refresh(pb::RefreshRequest { refresh_token }).await }
    });
    let grpc_successors: std::collections::HashSet<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|answer| {
            answer
                .expect("refresh")
                .into_inner()
                .user
                .expect("user")
                .refresh_token
        })
        .collect();
    assert_eq!(grpc_successors.len(), 1, "{grpc_successors:?}");

    // Past the grace period the first token is a copy: the session ends.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (status, body) = refresh(&rest, &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body,
        json!({"errors": {"refreshToken": ["was already used; the session has been ended"]}})
    );
    let (status, _) = refresh(&rest, &second).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = rest.get("/api/user", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_caller_and_hold_no_credentials() {
    let server = server_with(&[]).await;
    let rest = Rest::new(&server);
    let alice = rest.register(&unique("alice")).await;
    let bob = rest.register(&unique("bob")).await;
    let http = server.http();
    let create = |token: &str, key: &str, title: &str| {
        http.post(server.url("/api/articles"))
            .header("authorization", format!("Token {token}"))
            .header("idempotency-key", key)
            .json(&json!({"article": {"title": title, "description": "d", "body": "b"}}))
            .send()
    };
    // The same key from another caller is that caller's own, new key.
    let a = create(&alice, "shared-key", "Same title").await.expect("a");
    assert_eq!(a.status(), StatusCode::CREATED);
    let b = create(&bob, "shared-key", "Same title").await.expect("b");
    assert_eq!(b.status(), StatusCode::CREATED);
    assert!(b.headers().get("idempotent-replayed").is_none());
    let a_slug = a.json::<Value>().await.expect("json")["article"]["slug"].clone();
    let b_slug = b.json::<Value>().await.expect("json")["article"]["slug"].clone();
    assert_ne!(a_slug, b_slug, "two articles");
    let again = create(&alice, "shared-key", "Same title")
        .await
        .expect("again");
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    // Only deterministic answers are kept: a 404 is not, so its retry runs afresh…
    let favorite = |key: &str, slug: &str| {
        http.post(server.url(&format!("/api/articles/{slug}/favorite")))
            .header("authorization", format!("Token {bob}"))
            .header("idempotency-key", key)
            .send()
    };
    let missing = favorite("fav-key", "not-yet").await.expect("send");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing = favorite("fav-key", "not-yet").await.expect("send");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().get("idempotent-replayed").is_none());
    // …while a 422 is replayed.
    let invalid = || {
        http.post(server.url("/api/articles"))
            .header("authorization", format!("Token {bob}"))
            .header("idempotency-key", "bad-key")
            .json(&json!({"article": {"title": "", "description": "d", "body": "b"}}))
            .send()
    };
    assert_eq!(
        invalid().await.expect("send").status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let replayed = invalid().await.expect("send");
    assert_eq!(replayed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");

    // Every operation that issues credentials, keyed, on both protocols: nothing stored.
    let name = unique("cred");
    let keyed = |path: &str, token: Option<&str>, body: Value, method: reqwest::Method| {
        let mut request = http
            .request(method, server.url(path))
            .header("idempotency-key", format!("k-{path}"))
            .json(&body);
        if let Some(t) = token {
            request = request.header("authorization", format!("Token {t}"));
        }
        request.send()
    };
    let registered = keyed(
        "/api/users",
        None,
        json!({"user": {"username": name, "email": email(&name), "password": "password123"}}),
        reqwest::Method::POST,
    )
    .await
    .expect("register")
    .json::<Value>()
    .await
    .expect("json");
    let (token, refresh_token) = tokens_of(&registered);
    let logged_in = keyed(
        "/api/users/login",
        None,
        json!({"user": {"email": email(&name), "password": "password123"}}),
        reqwest::Method::POST,
    )
    .await
    .expect("login")
    .json::<Value>()
    .await
    .expect("json");
    let refreshed = keyed(
        "/api/users/refresh",
        None,
        json!({ "refreshToken": refresh_token }),
        reqwest::Method::POST,
    )
    .await
    .expect("refresh")
    .json::<Value>()
    .await
    .expect("json");
    let updated = keyed(
        "/api/user",
        Some(&token),
        json!({"user": {"password": "a-new-password"}}),
        reqwest::Method::PUT,
    )
    .await
    .expect("update")
    .json::<Value>()
    .await
    .expect("json");
    let mut users = UserServiceClient::new(server.channel().await);
    let mut request = grpc_request(
        pb::UpdateUserRequest {
            user: Some(pb::User {
                password: "a-third-password".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Some(&token),
    );
    request
        .metadata_mut()
        .insert("idempotency-key", "grpc-update".parse().expect("key"));
    let grpc_updated = users
        .update_user(request)
        .await
        .expect("update")
        .into_inner()
        .user
        .expect("user");
    let mut issued = vec![
        token,
        refresh_token,
        grpc_updated.token,
        grpc_updated.refresh_token,
    ];
    for body in [&logged_in, &refreshed, &updated] {
        let (t, r) = tokens_of(body);
        issued.extend([t, r]);
    }
    let db = sql(&server).await;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT scope, response_body FROM idempotency_keys",
        ))
        .await
        .expect("rows");
    for row in &rows {
        let scope: String = row.try_get("", "scope").expect("scope");
        assert!(
            scope.starts_with("user:"),
            "anonymous keys are not kept: {scope}"
        );
        let body: Option<Vec<u8>> = row.try_get("", "response_body").expect("body");
        let text = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
        for credential in &issued {
            assert!(
                !text.contains(credential.as_str()),
                "a stored answer holds a credential"
            );
        }
    }
    assert!(
        count(
            &db,
            "SELECT COUNT(*) AS n FROM idempotency_keys WHERE key LIKE 'k-%' OR key = 'grpc-update'"
        )
        .await
            == 0,
        "credential-issuing operations keep no key"
    );
}

#[tokio::test]
async fn a_caller_holds_a_bounded_number_of_keys() {
    let server = server_with(&[("CONDUIT__IDEMPOTENCY__MAX_KEYS_PER_CALLER", "3")]).await;
    let rest = Rest::new(&server);
    let name = unique("quota");
    let token = rest.register(&name).await;
    let http = server.http();
    let create = |key: String, title: String| {
        http.post(server.url("/api/articles"))
            .header("authorization", format!("Token {token}"))
            .header("idempotency-key", key)
            .json(&json!({"article": {"title": title, "description": "d", "body": "b"}}))
            .send()
    };
    for i in 0..3 {
        let answer = create(format!("q{i}"), format!("Quota {i}"))
            .await
            .expect("send");
        assert_eq!(answer.status(), StatusCode::CREATED);
    }
    let refused = create("q3".into(), "Quota 3".into()).await.expect("send");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.expect("json");
    assert!(body["errors"]["Idempotency-Key"].is_array(), "{body}");
    // The operation did not run; keys already held still replay; unkeyed requests run.
    let (_, list) = rest
        .get(&format!("/api/articles?author={name}"), None)
        .await;
    assert_eq!(list["articlesCount"], 3, "{list}");
    let replayed = create("q0".into(), "Quota 0".into()).await.expect("send");
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let mut articles = ArticleServiceClient::new(server.channel().await);
    let mut request = grpc_request(
        pb::CreateArticleRequest {
            title: "Quota grpc".into(),
            description: "d".into(),
            body: "b".into(),
            tag_list: Vec::new(),
        },
        Some(&token),
    );
    request
        .metadata_mut()
        .insert("idempotency-key", "q4".parse().expect("key"));
    let status = articles.create_article(request).await.expect_err("quota");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_QUOTA");
    let (status, _) = rest
        .post(
            "/api/articles",
            Some(&token),
            json!({"article": {"title": "Unkeyed", "description": "d", "body": "b"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// Postgres only: a table lock held from outside stalls a keyed write inside its
/// transaction, past its deadline, so the interleavings a stalled request meets in
/// production can be arranged.
async fn stalled(server: &TestServer, table: &str) -> Option<sea_orm::DatabaseTransaction> {
    use sea_orm::TransactionTrait;
    if !server.db.is_postgres() {
        return None;
    }
    let db = sql(server).await;
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await
        .expect("lock");
    Some(txn)
}

#[tokio::test]
async fn a_claim_that_lost_its_key_cannot_commit() {
    let server = server_with(&[("CONDUIT__SERVER__REQUEST_TIMEOUT", "1s")]).await;
    let rest = Rest::new(&server);
    let name = unique("fence");
    let token = rest.register(&name).await;
    let slug = rest.publish(&token, "Fenced", &[]).await;
    // Comments have no unique key of their own: without the fence, both attempts below
    // would add one.
    let Some(lock) = stalled(&server, "comments").await else {
        eprintln!("skipped: needs Postgres (CONDUIT_TEST_DATABASE_URL) to stall a write");
        return;
    };
    let http = server.http();
    let comment = || {
        http.post(server.url(&format!("/api/articles/{slug}/comments")))
            .header("authorization", format!("Token {token}"))
            .header("idempotency-key", "fenced")
            .json(&json!({"comment": {"body": "said once"}}))
            .send()
    };
    // The first attempt stalls inside its transaction and runs out of time; its key is
    // given up, its transaction waits on. The retry claims the key afresh and waits too.
    let first = comment().await.expect("first");
    assert_eq!(first.status(), StatusCode::GATEWAY_TIMEOUT);
    // The 504 may leave before the key is given up (the guard's deadline and the keyed
    // task's are the same instant): until then a retry is told 409, retry in a moment,
    // and does as the contract says.
    let retried = async {
        for _ in 0..100 {
            let retry = comment().await.expect("retry");
            if retry.status() != StatusCode::CONFLICT {
                return retry;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the timed-out claim was never given up");
    };
    let unlock = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lock.commit().await.expect("unlock");
    };
    let (retry, ()) = tokio::join!(retried, unlock);
    assert_eq!(retry.status(), StatusCode::CREATED);
    // Both transactions went on once the lock was gone; only the claim's holder committed.
    let db = sql(&server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let said = count(
        &db,
        "SELECT COUNT(*) AS n FROM comments WHERE body = 'said once'",
    )
    .await;
    assert_eq!(said, 1, "the operation committed once");
}

#[tokio::test]
async fn keyed_work_keeps_its_place_after_its_caller_leaves() {
    let server = server_with(&[
        ("CONDUIT__SERVER__CONCURRENCY_LIMIT", "1"),
        ("CONDUIT__SERVER__REQUEST_TIMEOUT", "10s"),
    ])
    .await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("place")).await;
    let Some(lock) = stalled(&server, "articles").await else {
        eprintln!("skipped: needs Postgres (CONDUIT_TEST_DATABASE_URL) to stall a write");
        return;
    };
    // HTTP/2, so giving up resets the stream and the server drops the request at once.
    let impatient = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let gone = impatient
        .post(server.url("/api/articles"))
        .header("authorization", format!("Token {token}"))
        .header("idempotency-key", "left")
        .json(&json!({"article": {"title": "Left behind", "description": "d", "body": "b"}}))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    // Its write still runs, and still holds the one place in flight.
    let (status, body) = rest.get("/api/tags", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    lock.commit().await.expect("unlock");
    let mut served = false;
    for _ in 0..50 {
        if rest.get("/api/tags", None).await.0 == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the place came back when the write finished");
    // And its answer was kept for the retry.
    let retry = server
        .http()
        .post(server.url("/api/articles"))
        .header("authorization", format!("Token {token}"))
        .header("idempotency-key", "left")
        .json(&json!({"article": {"title": "Left behind", "description": "d", "body": "b"}}))
        .send()
        .await
        .expect("retry");
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn lists_comments_and_tags_are_bounded() {
    let server = server_with(&[]).await;
    let rest = Rest::new(&server);
    let token = rest.register(&unique("bounds")).await;
    let eleven: Vec<String> = (0..11).map(|i| format!("tag{i}")).collect();
    let (status, body) = rest
        .post(
            "/api/articles",
            Some(&token),
            json!({"article": {"title": "Bounded", "description": "d", "body": "b", "tagList": eleven}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"tagList": ["is too long (maximum is 10 tags)"]}})
    );
    let (status, body) = rest
        .post(
            "/api/articles",
            Some(&token),
            json!({"article": {"title": "Bounded", "description": "d", "body": "b", "tagList": ["x".repeat(33)]}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"tagList": ["has a tag that is too long (maximum is 32 characters)"]}})
    );
    let mut articles = ArticleServiceClient::new(server.channel().await);
    let status = articles
        .create_article(grpc_request(
            pb::CreateArticleRequest {
                title: "Bounded".into(),
                description: "d".into(),
                body: "b".into(),
                tag_list: (0..11).map(|i| format!("tag{i}")).collect(),
            },
            Some(&token),
        ))
        .await
        .expect_err("eleven tags");
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status.get_details_bad_request().expect("bad request");
    assert_eq!(violations.field_violations[0].field, "tagList");

    let (status, body) = rest.get("/api/articles?offset=10001", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["errors"]["offset"][0]
            .as_str()
            .expect("message")
            .contains("10000")
    );
    let (status, _) = rest.get("/api/articles?offset=10000", None).await;
    assert_eq!(status, StatusCode::OK);

    // Comments come in pages: a default the RealWorld shape hides, limit and offset.
    let slug = rest.publish(&token, "Talked about", &[]).await;
    for i in 0..5 {
        rest.comment(&token, &slug, &format!("comment {i}")).await;
    }
    let (_, all) = rest
        .get(&format!("/api/articles/{slug}/comments"), None)
        .await;
    assert_eq!(all["comments"].as_array().expect("comments").len(), 5);
    let (_, page) = rest
        .get(
            &format!("/api/articles/{slug}/comments?limit=2&offset=1"),
            None,
        )
        .await;
    let bodies: Vec<&str> = page["comments"]
        .as_array()
        .expect("comments")
        .iter()
        .map(|c| c["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, ["comment 3", "comment 2"]);
    for bad in ["limit=101", "limit=0", "offset=10001", "offset=-1"] {
        let (status, body) = rest
            .get(&format!("/api/articles/{slug}/comments?{bad}"), None)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let mut comments = CommentServiceClient::new(server.channel().await);
    let page = comments
        .list_comments(pb::ListCommentsRequest {
            slug: slug.clone(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(page.comments.len(), 2);
    assert!(!page.next_page_token.is_empty());
}

#[tokio::test]
async fn secrets_are_never_echoed_or_printed() {
    let server = server_with(&[]).await;
    let rest = Rest::new(&server);
    for (path, body) in [
        (
            "/api/users/login",
            json!({"user": {"email": "x@example.com", "password": 987_654_321}}),
        ),
        (
            "/api/users/login",
            json!({"user": {"email": "x@example.com", "password": "p", "otp": 987_654_321}}),
        ),
        ("/api/users/refresh", json!({"refreshToken": 987_654_321})),
        (
            "/api/users",
            json!({"user": {"username": "x", "email": "x@example.com", "password": 987_654_321.5}}),
        ),
    ] {
        let (status, body) = rest.post(path, None, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            !body.to_string().contains("987654321"),
            "{path} echoed: {body}"
        );
    }

    // A password in a URL's query, or in the collector's user info, is never printed.
    let secret_url = "postgres://app@127.0.0.1:1/nowhere?password=hunter2-in-query&sslmode=disable";
    let output = common::run_cli(
        &["config", "check"],
        &[(
            "CONDUIT__TELEMETRY__OTLP_ENDPOINT",
            "http://collector:pw-in-userinfo@otel:4317",
        )],
        secret_url,
    );
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("password=<redacted>"), "{printed}");
    for secret in ["hunter2-in-query", "pw-in-userinfo"] {
        assert!(!printed.contains(secret), "config check printed {secret}");
    }
    let output = common::run_cli(
        &["serve"],
        &[("CONDUIT__DATABASE__STARTUP_DEADLINE", "1s")],
        secret_url,
    );
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(printed.contains("database unreachable"), "{printed}");
    assert!(!printed.contains("hunter2-in-query"), "{printed}");
}

#[tokio::test]
async fn one_account_one_limit_and_no_owner_lockout() {
    let server = server_with(&[
        ("CONDUIT__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("CONDUIT__RATE_LIMIT__PER_ACCOUNT_PER_MINUTE", "3"),
        ("CONDUIT__RATE_LIMIT__PER_ACCOUNT_TOTAL_PER_MINUTE", "100"),
        ("CONDUIT__RATE_LIMIT__PER_IP_PER_MINUTE", "5"),
    ])
    .await;
    let rest = Rest::new(&server);
    let name = format!("limit{}", &unique("")[..6]);
    rest.register(&name).await;
    let http = server.http();
    let from = |ip: &str, address: String, password: &str| {
        http.post(server.url("/api/users/login"))
            .header("x-forwarded-for", ip)
            .json(&json!({"user": {"email": address, "password": password}}))
            .send()
    };
    // Spellings the database takes for this account count as this account.
    let postgres = server.db.is_postgres();
    let spellings: Vec<String> = if postgres {
        vec![
            email(&name).replace('i', "\u{130}"),
            email(&name).to_uppercase(),
            email(&name),
        ]
    } else {
        vec![
            email(&name).to_uppercase(),
            email(&name).replacen('l', "L", 1),
            email(&name),
        ]
    };
    if postgres {
        let (status, _) = login(&rest, &spellings[0], "password123").await;
        assert_eq!(status, StatusCode::OK, "Postgres folds İ to i: one account");
    }
    let attacker = "198.51.100.9";
    for (i, spelling) in spellings.iter().enumerate() {
        let answer = from(&format!("198.51.100.{}", 20 + i), spelling.clone(), "wrong")
            .await
            .expect("send");
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    for spelling in &spellings {
        let answer = from(attacker, spelling.clone(), "wrong")
            .await
            .expect("send");
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    let answer = from(attacker, email(&name), "password123")
        .await
        .expect("send");
    assert_eq!(
        answer.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the attacker's address is limited on this account"
    );
    // The owner, from an address of their own, signs in.
    let owner = from("203.0.113.5", email(&name), "password123")
        .await
        .expect("send");
    assert_eq!(owner.status(), StatusCode::OK);

    // IPv6 clients count per /64: one host cycling through its addresses is one client.
    for i in 1..=5 {
        let answer = from(&format!("2001:db8:7:7::{i}"), email(&unique("v6")), "x")
            .await
            .expect("send");
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    let answer = from("2001:db8:7:7:ffff::1", email(&unique("v6")), "x")
        .await
        .expect("send");
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    let answer = from("2001:db8:7:8::1", email(&unique("v6")), "x")
        .await
        .expect("send");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "another /64");
}

#[tokio::test]
async fn identifiers_people_can_trust() {
    let server = server_with(&[]).await;
    let rest = Rest::new(&server);
    let base = format!("kelvin{}", &unique("")[..6]);
    let token = rest.register(&base).await;
    let register_as = |username: String| {
        let rest = &rest;
        async move {
            rest.post(
                "/api/users",
                None,
                json!({"user": {"username": username, "email": format!("{}@example.com", unique("u")), "password": "password123"}}),
            )
            .await
        }
    };
    for look_alike in [
        base.replacen('e', "\u{435}", 1),  // Cyrillic е
        base.replacen('k', "\u{ff4b}", 1), // fullwidth ｋ
        "\u{3164}".to_string(),            // Hangul filler
        "\u{2800}\u{2800}".to_string(),    // braille blanks
        "\u{301}\u{302}".to_string(),      // combining marks only
        format!("{base}\u{202e}x"),        // bidi override
    ] {
        let (status, body) = register_as(look_alike.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{look_alike:?}: {body}"
        );
        assert!(body["errors"]["username"].is_array(), "{body}");
    }
    // Names that pass the profile but look like one taken: the skeleton is unique.
    let (status, body) = register_as(base.replacen('l', "1", 1)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body,
        json!({"errors": {"username": ["has already been taken"]}})
    );
    let mut users = UserServiceClient::new(server.channel().await);
    let status = users
        .register(pb::RegisterRequest {
            username: base.replacen('l', "I", 1),
            email: email(&unique("g")),
            password: "password123".into(),
        })
        .await
        .expect_err("look-alike");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "USERNAME_TAKEN");

    // Images are http(s) only.
    for image in ["javascript:alert(1)", "data:image/png;base64,AAAA"] {
        let (status, body) = rest
            .put("/api/user", Some(&token), json!({"user": {"image": image}}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["errors"]["image"].is_array(), "{body}");
    }
    let (status, _) = rest
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"image": "https://example.com/me.png"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The scheme is case-insensitive (RFC 9110).
    for scheme in ["token", "TOKEN", "bearer", "BeArEr"] {
        let response = server
            .http()
            .get(server.url("/api/user"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }

    // A token issued in the future (beyond the clock-skew leeway) is not ours.
    let claims = claims_of(&token);
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    let mut future = claims.clone();
    future["iat"] = json!(now() + 3_600);
    let forged = forge(&header, &future);
    let (status, body) = rest.get("/api/user", Some(&forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Refused requests are counted under their operation.
    let (status, _) = rest.get("/api/user", Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metrics = server.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_server_requests_total")
                && l.contains("operation=\"GET /api/user\"")
                && l.contains("outcome=\"401\"")),
        "{metrics}"
    );

    // A user whose row is gone is unauthenticated on writes, not an internal error.
    let db = sql(&server).await;
    db.execute_unprepared(&format!("DELETE FROM users WHERE username = '{base}'"))
        .await
        .expect("delete");
    let (status, body) = rest
        .post(
            "/api/articles",
            Some(&token),
            json!({"article": {"title": "Ghost", "description": "d", "body": "b"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

fn forge(header: &Value, claims: &Value) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let signing_input = format!("{}.{}", encode(header), encode(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}
