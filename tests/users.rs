//! The users slice end to end on both protocols, against the real server.

mod common;

use common::{Grpc, Rest, TestServer, grpc_request, token_header, unique};
use conduit::proto::conduit::v1::{self as pb, user_service_client::UserServiceClient};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

async fn rest_register(
    server: &TestServer,
    username: &str,
    email: &str,
    password: &str,
) -> (StatusCode, Value) {
    let response = server
        .http()
        .post(server.url("/api/users"))
        .json(&json!({"user": {"username": username, "email": email, "password": password}}))
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.expect("json body"))
}

#[tokio::test]
async fn rest_register_login_current_update() {
    let server = TestServer::start().await;
    let http = server.http();
    let name = unique("jake");
    let email = format!("{name}@example.com");

    let (status, body) = rest_register(&server, &name, &email, "jakejake").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["user"]["username"], name);
    assert_eq!(body["user"]["email"], email);
    assert_eq!(body["user"]["bio"], Value::Null);
    assert_eq!(body["user"]["image"], Value::Null);
    assert!(
        body["user"]["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );

    let login = http
        .post(server.url("/api/users/login"))
        .json(&json!({"user": {"email": email, "password": "jakejake"}}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
    assert!(login.headers().get("content-type").is_some_and(|v| {
        v.to_str()
            .unwrap_or_default()
            .starts_with("application/json")
    }));
    let token = login.json::<Value>().await.expect("json")["user"]["token"]
        .as_str()
        .expect("token")
        .to_string();

    // Both spellings of the scheme are accepted.
    for scheme in ["Token", "Bearer"] {
        let me = http
            .get(server.url("/api/user"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .expect("me");
        assert_eq!(me.status(), StatusCode::OK, "{scheme}");
        assert_eq!(
            me.json::<Value>().await.expect("json")["user"]["username"],
            name
        );
    }

    let updated = http
        .put(server.url("/api/user"))
        .header("authorization", token_header(&token))
        .json(&json!({"user": {"bio": "I like to skateboard", "image": "https://i.stack.imgur.com/xHWG8.jpg"}}))
        .send()
        .await
        .expect("update");
    assert_eq!(updated.status(), StatusCode::OK);
    let user = &updated.json::<Value>().await.expect("json")["user"];
    assert_eq!(user["bio"], "I like to skateboard");
    assert_eq!(user["image"], "https://i.stack.imgur.com/xHWG8.jpg");
    assert_eq!(user["email"], email, "untouched fields stay");

    // null clears, and a new password replaces the old one.
    let cleared = http
        .put(server.url("/api/user"))
        .header("authorization", token_header(&token))
        .json(&json!({"user": {"bio": null, "password": "newsecret"}}))
        .send()
        .await
        .expect("update");
    assert_eq!(cleared.status(), StatusCode::OK);
    let user = &cleared.json::<Value>().await.expect("json")["user"];
    assert_eq!(user["bio"], Value::Null);
    assert_eq!(user["image"], "https://i.stack.imgur.com/xHWG8.jpg");
    let old = http
        .post(server.url("/api/users/login"))
        .json(&json!({"user": {"email": email, "password": "jakejake"}}))
        .send()
        .await
        .expect("login");
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        old.json::<Value>().await.expect("json"),
        json!({"errors": {"credentials": ["invalid"]}})
    );
    let new = http
        .post(server.url("/api/users/login"))
        .json(&json!({"user": {"email": email, "password": "newsecret"}}))
        .send()
        .await
        .expect("login");
    assert_eq!(new.status(), StatusCode::OK);
}

#[tokio::test]
async fn rest_errors_have_the_realworld_shape() {
    let server = TestServer::start().await;
    let http = server.http();

    let (status, body) = rest_register(&server, "", "not-an-email", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"username": ["can't be blank"], "email": ["is invalid"], "password": ["can't be blank"]}})
    );

    // Missing fields are blank, not a deserialisation error.
    let response = http
        .post(server.url("/api/users"))
        .json(&json!({"user": {"email": "a@b.c"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"errors": {"username": ["can't be blank"], "password": ["can't be blank"]}})
    );

    let name = unique("taken");
    Rest::new(&server).register(&name).await;
    let (status, body) = rest_register(&server, &name, "other@x.io", "password1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({"errors": {"username": ["has already been taken"]}})
    );
    let (status, body) = rest_register(
        &server,
        &unique("other"),
        &format!("{name}@example.com"),
        "password1",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({"errors": {"email": ["has already been taken"]}})
    );

    let no_token = http
        .get(server.url("/api/user"))
        .send()
        .await
        .expect("send");
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        no_token.json::<Value>().await.expect("json"),
        json!({"errors": {"token": ["is missing"]}})
    );
    let bad_token = http
        .get(server.url("/api/user"))
        .header("authorization", "Token not.a.jwt")
        .send()
        .await
        .expect("send");
    assert_eq!(bad_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad_token.json::<Value>().await.expect("json"),
        json!({"errors": {"token": ["invalid"]}})
    );

    let unknown = http
        .post(server.url("/api/users/login"))
        .json(&json!({"user": {"email": "nobody@x.io", "password": "whatever"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    // Malformed bodies: still 422 with a RealWorld error, never a 500 or plain text.
    for (body, content_type) in [
        ("{not json", "application/json"),
        ("{\"user\": 5}", "application/json"),
        ("{}", "text/plain"),
    ] {
        let response = http
            .post(server.url("/api/users"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let json: Value = response.json().await.expect("json");
        assert!(json["errors"]["body"].is_array(), "{json}");
    }
}

#[tokio::test]
async fn grpc_register_login_current_update() {
    let server = TestServer::start().await;
    let mut users = UserServiceClient::new(server.channel().await);
    let name = unique("grpc");
    let email = format!("{name}@example.com");

    let registered = users
        .register(pb::RegisterRequest {
            username: name.clone(),
            email: email.clone(),
            password: "secret123".into(),
        })
        .await
        .expect("register")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(registered.username, name);
    assert_eq!(registered.bio, None);

    let token = users
        .login(pb::LoginRequest {
            email: email.clone(),
            password: "secret123".into(),
            otp: String::new(),
        })
        .await
        .expect("login")
        .into_inner()
        .user
        .expect("user")
        .token;

    let me = users
        .get_current_user(grpc_request(pb::GetCurrentUserRequest {}, Some(&token)))
        .await
        .expect("current")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(me.email, email);

    let updated = users
        .update_user(grpc_request(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    bio: Some("gRPC person".into()),
                    ..Default::default()
                }),
                update_mask: None,
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .expect("update")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(updated.bio.as_deref(), Some("gRPC person"));
    assert_eq!(updated.username, name);

    // A masked field left empty clears it.
    let cleared = users
        .update_user(grpc_request(
            pb::UpdateUserRequest {
                user: None,
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["bio".into()],
                }),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .expect("update")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(cleared.bio, None);
}

#[tokio::test]
async fn grpc_errors_carry_codes_and_field_details() {
    let server = TestServer::start().await;
    let grpc = Grpc::new(&server).await;
    let mut users = UserServiceClient::new(grpc.channel());

    let status = users
        .register(pb::RegisterRequest {
            username: String::new(),
            email: "x@y.z".into(),
            password: String::new(),
        })
        .await
        .expect_err("blank fields");
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_request = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let fields: Vec<(&str, &str)> = bad_request
        .field_violations
        .iter()
        .map(|v| (v.field.as_str(), v.description.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("username", "can't be blank"),
            ("password", "can't be blank")
        ]
    );

    let name = unique("dup");
    grpc.register(&name).await;
    let status = users
        .register(pb::RegisterRequest {
            username: name.clone(),
            email: "fresh@x.io".into(),
            password: "pw123456".into(),
        })
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(status.message(), "username has already been taken");

    // Taking a name on update is ALREADY_EXISTS over gRPC too (REST says 422, per spec).
    let other_token = grpc.register(&unique("other")).await;
    let status = users
        .update_user(grpc_request(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    username: name.clone(),
                    ..Default::default()
                }),
                update_mask: None,
                ..Default::default()
            },
            Some(&other_token),
        ))
        .await
        .expect_err("taken");
    assert_eq!(status.code(), Code::AlreadyExists);

    let status = users
        .login(pb::LoginRequest {
            email: format!("{name}@example.com"),
            password: "wrong".into(),
            otp: String::new(),
        })
        .await
        .expect_err("wrong password");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = users
        .get_current_user(pb::GetCurrentUserRequest {})
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "token is missing");
    let status = users
        .get_current_user(grpc_request(
            pb::GetCurrentUserRequest {},
            Some("forged.token.value"),
        ))
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "token invalid");
}

#[tokio::test]
async fn one_user_across_both_protocols() {
    let server = TestServer::start().await;
    let mut users = UserServiceClient::new(server.channel().await);
    let name = unique("cross");
    let email = format!("{name}@example.com");

    users
        .register(pb::RegisterRequest {
            username: name.clone(),
            email: email.clone(),
            password: "crosspass".into(),
        })
        .await
        .expect("register over gRPC");

    // Created over gRPC, logs in over REST.
    let rest = Rest::new(&server);
    let (rest_token, _) = rest.login(&email, "crosspass").await;

    // A REST token works over gRPC, and a REST update is visible there.
    rest.update_user(&rest_token, json!({"image": "https://example.com/me.png"}))
        .await;
    let me = users
        .get_current_user(grpc_request(
            pb::GetCurrentUserRequest {},
            Some(&rest_token),
        ))
        .await
        .expect("current over gRPC")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(me.username, name);
    assert_eq!(me.image.as_deref(), Some("https://example.com/me.png"));

    // A gRPC-made username conflict is reported over REST too.
    let (status, body) = rest_register(&server, &name, "another@example.com", "x1234567").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({"errors": {"username": ["has already been taken"]}})
    );
}
