//! The API contract beyond the published RealWorld spec, over both protocols on the real
//! server: explicit `null`, the password policy, identities that ignore case, self-follow;
//! and the gRPC API's AIP shape — field-mask updates, page tokens, machine-readable errors.

mod common;

use common::{Grpc, Rest, TestServer, grpc_request, unique};
use conduit::proto::conduit::v1::{
    self as pb, article_service_client::ArticleServiceClient,
    comment_service_client::CommentServiceClient, profile_service_client::ProfileServiceClient,
    user_service_client::UserServiceClient,
};
use prost_types::FieldMask;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

/// The status's `ErrorInfo` reason, after checking its domain and that it names a value
/// of `conduit.v1.Reason` (without its prefix); panics when it has none.
fn reason(status: &Status) -> String {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.domain, "conduit", "{status:?}");
    let declared = pb::Reason::from_str_name(&format!("REASON_{}", info.reason));
    assert!(
        declared.is_some_and(|r| r != pb::Reason::Unspecified),
        "{} is not a conduit.v1.Reason",
        info.reason
    );
    // The request id to quote, the same the response echoes in `x-request-id`.
    let echoed = status
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    assert!(echoed.is_some(), "{status:?}");
    assert_eq!(
        info.metadata.get("request_id").map(String::as_str),
        echoed,
        "ErrorInfo quotes the request id: {status:?}"
    );
    info.reason
}

fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn explicit_null_is_refused_where_a_field_is_not_nullable() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let name = unique("nulls");
    let token = rest.register(&name).await;
    let set = rest
        .update_user(
            &token,
            json!({"bio": "still here", "image": "https://img.example/a.png"}),
        )
        .await;
    assert_eq!(set["bio"], "still here");

    for field in ["email", "username", "password"] {
        let (status, body) = rest
            .put("/api/user", Some(&token), json!({"user": {field: null}}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert_eq!(body, json!({"errors": {field: ["can't be null"]}}));
    }
    // Absent means unchanged; `null` clears only the nullable fields.
    let (status, body) = rest
        .put("/api/user", Some(&token), json!({"user": {"image": null}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["image"], Value::Null);
    assert_eq!(body["user"]["bio"], "still here");
    assert_eq!(body["user"]["username"], name.as_str());

    let slug = rest
        .publish(&token, &unique("Null title"), &["nulls"])
        .await;
    for field in ["title", "description", "body", "tagList"] {
        let (status, body) = rest
            .put(
                &format!("/api/articles/{slug}"),
                Some(&token),
                json!({"article": {field: null}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert_eq!(body, json!({"errors": {field: ["can't be null"]}}));
    }
    let (_, unchanged) = rest.get(&format!("/api/articles/{slug}"), None).await;
    assert_eq!(unchanged["article"]["tagList"], json!(["nulls"]));

    // The same rule on POST bodies, every null field named at once.
    let (status, body) = rest
        .post(
            "/api/users",
            None,
            json!({"user": {"username": null, "email": "n@example.io", "password": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"username": ["can't be null"], "password": ["can't be null"]}})
    );
    let (status, body) = rest
        .post(
            "/api/articles",
            Some(&token),
            json!({"article": {"title": "t", "description": null, "body": "b"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, json!({"errors": {"description": ["can't be null"]}}));
    let (status, body) = rest
        .post(
            &format!("/api/articles/{slug}/comments"),
            Some(&token),
            json!({"comment": {"body": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, json!({"errors": {"body": ["can't be null"]}}));
}

#[tokio::test]
async fn passwords_follow_the_nist_length_rules_on_both_protocols() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let too_short = json!({"errors": {"password": ["is too short (minimum is 8 characters)"]}});
    let register = |password: String| {
        let name = unique("pw");
        json!({"user": {"username": name, "email": format!("{name}@example.io"), "password": password}})
    };

    // Characters, not bytes: seven accented letters are 14 bytes and still too short.
    for password in ["1234567", "ñandúés"] {
        let (status, body) = rest
            .post("/api/users", None, register(password.into()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        assert_eq!(body, too_short);
    }
    // No composition rules; 8, 64 and 256 characters, any script, are accepted.
    for password in [
        "12345678".to_string(),
        "ñandúésü".to_string(),
        "correct horse battery staple ".repeat(2) + "abcdef",
        "🔑".repeat(256),
    ] {
        let (status, body) = rest.post("/api/users", None, register(password)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = rest
        .post("/api/users", None, register("x".repeat(257)))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"password": ["is too long (maximum is 256 characters)"]}})
    );

    let token = rest.register(&unique("pwupdate")).await;
    let (status, body) = rest
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"password": "short"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, too_short);

    let grpc = Grpc::new(&server).await;
    let name = unique("pwgrpc");
    let refused = UserServiceClient::new(grpc.channel())
        .register(pb::RegisterRequest {
            username: name.clone(),
            email: format!("{name}@example.io"),
            password: "seven77".into(),
        })
        .await
        .expect_err("too short");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason(&refused), "VALIDATION_FAILED");
    assert_eq!(violated_fields(&refused), ["password"]);
    let token = grpc.register(&name).await;
    let refused = UserServiceClient::new(grpc.channel())
        .update_user(grpc_request(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    password: "short".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["password"]),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .expect_err("too short");
    assert_eq!(violated_fields(&refused), ["password"]);
}

#[tokio::test]
async fn identities_ignore_case_but_usernames_keep_theirs() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let grpc = Grpc::new(&server).await;
    let channel = grpc.channel();
    let name = format!("Jake{}", unique("Case"));
    let email = format!("{name}@Example.io");
    let (status, body) = rest
        .post(
            "/api/users",
            None,
            json!({"user": {"username": name, "email": email, "password": "jakejake"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["username"], name.as_str(), "display case kept");
    let token = body["user"]["token"].as_str().expect("token").to_string();

    // Login in any case, over both protocols.
    let (status, body) = rest
        .post(
            "/api/users/login",
            None,
            json!({"user": {"email": email.to_lowercase(), "password": "jakejake"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["username"], name.as_str());
    let logged_in = UserServiceClient::new(channel.clone())
        .login(pb::LoginRequest {
            email: email.to_uppercase(),
            password: "jakejake".into(),
            otp: String::new(),
        })
        .await
        .expect("login in upper case");
    assert_eq!(logged_in.into_inner().user.expect("user").username, name);

    // A second registration in another case is refused like any taken email or name.
    let (status, body) = rest
        .post(
            "/api/users",
            None,
            json!({"user": {"username": unique("other"), "email": email.to_lowercase(), "password": "jakejake"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({"errors": {"email": ["has already been taken"]}})
    );
    let taken = grpc
        .try_register(&name.to_lowercase(), "another@example.io")
        .await
        .expect_err("username taken in another case");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(reason(&taken), "USERNAME_TAKEN");
    let taken = grpc
        .try_register(&unique("x"), &email.to_uppercase())
        .await
        .expect_err("email taken in another case");
    assert_eq!(reason(&taken), "EMAIL_TAKEN");

    // Profiles and the author filter find the user in any case, shown in its own.
    let (status, body) = rest
        .get(&format!("/api/profiles/{}", name.to_lowercase()), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["profile"]["username"], name.as_str());
    let profile = ProfileServiceClient::new(channel.clone())
        .get_profile(pb::GetProfileRequest {
            username: name.to_uppercase(),
        })
        .await
        .expect("profile in upper case")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(profile.username, name);
    let slug = rest.publish(&token, &unique("Cased"), &["case"]).await;
    let (_, listed) = rest
        .get(
            &format!("/api/articles?author={}", name.to_uppercase()),
            None,
        )
        .await;
    assert_eq!(listed["articles"][0]["slug"], slug.as_str());

    // Changing only the case of one's own name is not a conflict with oneself.
    let (status, body) = rest
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"username": name.to_lowercase(), "email": email.to_uppercase()}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["username"], name.to_lowercase());
}

#[tokio::test]
async fn following_yourself_is_refused() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let name = unique("narcissus");
    let token = rest.register(&name).await;
    let (status, body) = rest
        .post(
            &format!("/api/profiles/{}/follow", name.to_uppercase()),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"profile": ["cannot be followed by yourself"]}})
    );
    let refused = ProfileServiceClient::new(server.channel().await)
        .follow_user(grpc_request(
            pb::FollowUserRequest {
                username: name.clone(),
            },
            Some(&token),
        ))
        .await
        .expect_err("self-follow");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason(&refused), "CANNOT_FOLLOW_SELF");
    let profile = rest.profile(&name, Some(&token)).await;
    assert_eq!(profile["following"], false);
}

#[tokio::test]
async fn grpc_updates_change_what_the_field_mask_names() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let grpc = Grpc::new(&server).await;
    let channel = grpc.channel();
    let name = unique("masked");
    let token = grpc.register(&name).await;
    let title = unique("Masked");
    let slug = rest.publish(&token, &title, &["masks"]).await;
    let mut articles = ArticleServiceClient::new(channel.clone());
    let update = |article: pb::Article, update_mask| {
        grpc_request(
            pb::UpdateArticleRequest {
                slug: slug.clone(),
                article: Some(article),
                update_mask,
            },
            Some(&token),
        )
    };

    // Only the masked field changes, whatever else the message carries (an echoed
    // article with output-only fields, a populated title).
    let echoed = pb::Article {
        slug: "ignored".into(),
        title: "Not this title".into(),
        body: Some("New body".into()),
        favorites_count: 99,
        ..Default::default()
    };
    let updated = articles
        .update_article(update(echoed, mask(&["body"])))
        .await
        .expect("masked update")
        .into_inner()
        .article
        .expect("article");
    assert_eq!(updated.title, title);
    assert_eq!(updated.slug, slug);
    assert_eq!(updated.body.as_deref(), Some("New body"));
    assert_eq!(updated.tag_list, ["masks"]);
    assert_eq!(updated.favorites_count, 0);

    // Without a mask, every populated field changes; empty ones are left alone.
    let updated = articles
        .update_article(update(
            pb::Article {
                description: "New description".into(),
                ..Default::default()
            },
            None,
        ))
        .await
        .expect("unmasked update")
        .into_inner()
        .article
        .expect("article");
    assert_eq!(updated.description, "New description");
    assert_eq!(updated.body.as_deref(), Some("New body"));
    assert_eq!(updated.tag_list, ["masks"]);

    // A masked field left empty is set empty: tags clear, a title may not be blank.
    let cleared = articles
        .update_article(update(pb::Article::default(), mask(&["tag_list"])))
        .await
        .expect("clear tags")
        .into_inner()
        .article
        .expect("article");
    assert!(cleared.tag_list.is_empty());
    let blank = articles
        .update_article(update(pb::Article::default(), mask(&["title"])))
        .await
        .expect_err("blank title");
    assert_eq!(reason(&blank), "VALIDATION_FAILED");
    assert_eq!(violated_fields(&blank), ["title"]);

    for bad in [&["slug"][..], &["favorites_count"], &["body", "nonsense"]] {
        let refused = articles
            .update_article(update(pb::Article::default(), mask(bad)))
            .await
            .expect_err("not updatable");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(reason(&refused), "INVALID_UPDATE_MASK");
        assert_eq!(violated_fields(&refused), ["update_mask"]);
    }
    let (_, unchanged) = rest.get(&format!("/api/articles/{slug}"), None).await;
    assert_eq!(
        unchanged["article"]["body"], "New body",
        "refusals change nothing"
    );

    // Users: a masked bio or image left empty clears it; `token` is output only.
    let mut users = UserServiceClient::new(channel);
    let user_update = |user: Option<pb::User>, update_mask| {
        grpc_request(
            pb::UpdateUserRequest {
                user,
                update_mask,
                ..Default::default()
            },
            Some(&token),
        )
    };
    let set = users
        .update_user(user_update(
            Some(pb::User {
                bio: Some("Bio".into()),
                image: Some("https://img.example/i.png".into()),
                ..Default::default()
            }),
            None,
        ))
        .await
        .expect("set")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(set.bio.as_deref(), Some("Bio"));
    let cleared = users
        .update_user(user_update(
            Some(pb::User {
                bio: Some("Ignored".into()),
                ..Default::default()
            }),
            mask(&["image"]),
        ))
        .await
        .expect("clear image")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(cleared.image, None);
    assert_eq!(cleared.bio.as_deref(), Some("Bio"));
    assert_eq!(cleared.username, name);
    let refused = users
        .update_user(user_update(None, mask(&["token"])))
        .await
        .expect_err("output only");
    assert_eq!(reason(&refused), "INVALID_UPDATE_MASK");
}

/// Walks a list in pages of `size`, calling `between` after each page; returns the slugs
/// seen in order.
async fn walk_articles(
    articles: &mut ArticleServiceClient<Channel>,
    tag: &str,
    size: i32,
    mut between: impl AsyncFnMut(),
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = articles
            .list_articles(pb::ListArticlesRequest {
                tag: Some(tag.into()),
                page_size: size,
                page_token,
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.articles.len() <= size as usize);
        seen.extend(page.articles.into_iter().map(|a| a.slug));
        if page.next_page_token.is_empty() {
            return seen;
        }
        page_token = page.next_page_token;
        between().await;
    }
}

#[tokio::test]
async fn grpc_lists_walk_pages_without_repeats_or_skips() {
    let server = TestServer::start().await;
    let rest = Rest::new(&server);
    let channel = server.channel().await;
    let writer = unique("pager");
    let token = rest.register(&writer).await;
    let tag = unique("paged");
    let mut published = Vec::new();
    for i in 0..7 {
        published.push(rest.publish(&token, &format!("{tag} {i}"), &[&tag]).await);
    }
    let newest_first: Vec<String> = published.iter().rev().cloned().collect();
    let mut articles = ArticleServiceClient::new(channel.clone());

    // New articles published mid-walk sort before the walk's position: the walk sees
    // exactly the articles that existed when it began, newest first, each once.
    let mut extra = 0;
    let seen = walk_articles(&mut articles, &tag, 3, async || {
        extra += 1;
        rest.publish(&token, &format!("{tag} late {extra}"), &[&tag])
            .await;
    })
    .await;
    assert_eq!(seen, newest_first);
    assert_eq!(extra, 2, "three pages, the last one without a next token");

    // An exact multiple of the page size ends without an empty page.
    let all = walk_articles(&mut articles, &tag, 9, async || {}).await;
    assert_eq!(all.len(), 9);

    let first = articles
        .list_articles(pb::ListArticlesRequest {
            tag: Some(tag.clone()),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("first page")
        .into_inner();
    let token_for_tag = first.next_page_token;
    // Tampered, made up, or sent with other filters: INVALID_PAGE_TOKEN.
    let mut tampered = token_for_tag.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let requests = [
        (Some(tag.clone()), None, tampered),
        (Some(tag.clone()), None, "bm90IGEgdG9rZW4".into()),
        (Some(unique("other")), None, token_for_tag.clone()),
        (
            Some(tag.clone()),
            Some(writer.clone()),
            token_for_tag.clone(),
        ),
        (None, None, token_for_tag.clone()),
    ];
    for (tag, author, page_token) in requests {
        let refused = articles
            .list_articles(pb::ListArticlesRequest {
                tag,
                author,
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .expect_err("foreign token");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(reason(&refused), "INVALID_PAGE_TOKEN");
        assert_eq!(violated_fields(&refused), ["page_token"]);
    }

    // Feed tokens belong to their reader; comment tokens to their article.
    let reader = unique("reader");
    let reader_token = rest.register(&reader).await;
    rest.follow(&reader_token, &writer).await;
    let feed = articles
        .feed_articles(grpc_request(
            pb::FeedArticlesRequest {
                page_size: 4,
                ..Default::default()
            },
            Some(&reader_token),
        ))
        .await
        .expect("feed")
        .into_inner();
    assert_eq!(feed.articles.len(), 4);
    let next = articles
        .feed_articles(grpc_request(
            pb::FeedArticlesRequest {
                page_size: 100,
                page_token: feed.next_page_token.clone(),
            },
            Some(&reader_token),
        ))
        .await
        .expect("feed page 2")
        .into_inner();
    assert_eq!(next.articles.len(), 5);
    assert!(next.next_page_token.is_empty());
    let stranger = rest.register(&unique("stranger")).await;
    let refused = articles
        .feed_articles(grpc_request(
            pb::FeedArticlesRequest {
                page_size: 4,
                page_token: feed.next_page_token,
            },
            Some(&stranger),
        ))
        .await
        .expect_err("another reader's token");
    assert_eq!(reason(&refused), "INVALID_PAGE_TOKEN");

    let slug = &published[0];
    for i in 0..5 {
        rest.comment(&reader_token, slug, &format!("comment {i}"))
            .await;
    }
    let mut comments = CommentServiceClient::new(channel);
    let mut bodies = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = comments
            .list_comments(pb::ListCommentsRequest {
                slug: slug.clone(),
                page_size: 2,
                page_token,
            })
            .await
            .expect("comments")
            .into_inner();
        bodies.extend(page.comments.into_iter().map(|c| c.body));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        bodies,
        [
            "comment 4",
            "comment 3",
            "comment 2",
            "comment 1",
            "comment 0"
        ]
    );
    let refused = comments
        .list_comments(pb::ListCommentsRequest {
            slug: slug.clone(),
            page_size: 2,
            page_token: token_for_tag,
        })
        .await
        .expect_err("an article list's token");
    assert_eq!(reason(&refused), "INVALID_PAGE_TOKEN");
}

/// An expired token signed with the server's own secret, past jsonwebtoken's leeway.
/// A genuine token (right key id, session claims) past its expiry.
fn expired_token(secret: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let settings = conduit::config::AuthSettings {
        jwt_secret: secret.into(),
        ..Default::default()
    };
    let claims = json!({
        "sub": "1",
        "sid": uuid::Uuid::new_v4(),
        "sv": 0,
        "iss": settings.jwt_issuer,
        "iat": 1_000,
        "exp": 1_100,
    });
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(
        conduit::auth::TokenKeys::new(&settings)
            .current_key_id()
            .to_string(),
    );
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

#[tokio::test]
async fn every_grpc_error_carries_a_stable_reason() {
    let secret = "contract-test-secret-that-is-long-enough";
    let server = TestServer::start_with(&[
        ("CONDUIT__AUTH__JWT_SECRET", secret),
        ("CONDUIT__SERVER__BODY_LIMIT_BYTES", "4096"),
    ])
    .await;
    let rest = Rest::new(&server);
    let channel = server.channel().await;
    let author = unique("reasons");
    let author_token = rest.register(&author).await;
    let other_token = rest.register(&unique("intruder")).await;
    let slug = rest
        .publish(&author_token, &unique("Reasons"), &["why"])
        .await;
    let mut articles = ArticleServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let get = |slug: &str, token: Option<&str>| {
        grpc_request(pb::GetArticleRequest { slug: slug.into() }, token)
    };
    let delete =
        |token: Option<&str>| grpc_request(pb::DeleteArticleRequest { slug: slug.clone() }, token);

    let mut cases: Vec<(Status, Code, &str)> = Vec::new();
    let mut expect = |result: Result<(), Status>, code, reason| {
        cases.push((result.expect_err("refused"), code, reason));
    };
    expect(
        articles
            .get_article(get("no-such-article", None))
            .await
            .map(drop),
        Code::NotFound,
        "ARTICLE_NOT_FOUND",
    );
    expect(
        articles.delete_article(delete(None)).await.map(drop),
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    expect(
        articles
            .get_article(get(&slug, Some("not.a.jwt")))
            .await
            .map(drop),
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    expect(
        articles
            .get_article(get(&slug, Some(&expired_token(secret))))
            .await
            .map(drop),
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
    );
    expect(
        articles
            .delete_article(delete(Some(&other_token)))
            .await
            .map(drop),
        Code::PermissionDenied,
        "NOT_AUTHOR",
    );
    expect(
        users
            .login(pb::LoginRequest {
                email: format!("{author}@example.com"),
                password: "wrong password".into(),
                otp: String::new(),
            })
            .await
            .map(drop),
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    expect(
        users
            .register(pb::RegisterRequest {
                username: author.to_uppercase(),
                email: format!("{}@example.io", unique("x")),
                password: "password123".into(),
            })
            .await
            .map(drop),
        Code::AlreadyExists,
        "USERNAME_TAKEN",
    );
    expect(
        users
            .register(pb::RegisterRequest {
                username: " ".into(),
                email: "nope".into(),
                password: "password123".into(),
            })
            .await
            .map(drop),
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    expect(
        CommentServiceClient::new(channel.clone())
            .delete_comment(grpc_request(
                pb::DeleteCommentRequest {
                    slug: slug.clone(),
                    id: 987_654,
                },
                Some(&author_token),
            ))
            .await
            .map(drop),
        Code::NotFound,
        "COMMENT_NOT_FOUND",
    );
    expect(
        ProfileServiceClient::new(channel.clone())
            .get_profile(pb::GetProfileRequest {
                username: unique("nobody"),
            })
            .await
            .map(drop),
        Code::NotFound,
        "PROFILE_NOT_FOUND",
    );
    expect(
        articles
            .create_article(grpc_request(
                pb::CreateArticleRequest {
                    title: "big".into(),
                    description: "d".into(),
                    body: "x".repeat(8192),
                    tag_list: vec![],
                },
                Some(&author_token),
            ))
            .await
            .map(drop),
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
    );
    // Answered by layers before any handler: the unknown-method fallback and a bad
    // idempotency key.
    let mut unknown = tonic::client::Grpc::new(channel.clone());
    unknown.ready().await.expect("ready");
    let unimplemented: Result<tonic::Response<pb::GetArticleResponse>, Status> = unknown
        .unary(
            tonic::Request::new(pb::GetArticleRequest::default()),
            "/conduit.v1.ArticleService/NoSuchMethod"
                .parse()
                .expect("path"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    expect(
        unimplemented.map(drop),
        Code::Unimplemented,
        "METHOD_NOT_FOUND",
    );
    let mut keyed = delete(Some(&author_token));
    keyed.metadata_mut().insert(
        "idempotency-key",
        "k".repeat(1000).parse().expect("metadata"),
    );
    expect(
        articles.delete_article(keyed).await.map(drop),
        Code::InvalidArgument,
        "INVALID_IDEMPOTENCY_KEY",
    );

    for (status, code, expected) in &cases {
        assert_eq!(status.code(), *code, "{status:?}");
        assert_eq!(reason(status), *expected, "{status:?}");
        assert!(
            expected.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "UPPER_SNAKE: {expected}"
        );
    }
    let (status, _) = &cases
        .iter()
        .find(|(s, _, _)| s.code() == Code::InvalidArgument)
        .map(|(s, c, _)| (s, c))
        .expect("a validation failure");
    let mut fields = violated_fields(status);
    fields.sort();
    assert_eq!(fields, ["email", "username"], "BadRequest names each field");
}
