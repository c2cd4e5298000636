//! The same scenario over REST and over gRPC must produce the same data: each step's
//! result is rendered in RealWorld JSON (gRPC messages converted field by field), names
//! that differ between the two runs are replaced by a placeholder, and the two
//! transcripts are compared whole.

mod common;

use common::{Grpc, Rest, TestServer, grpc_request, is_realworld_timestamp, unique};
use conduit::proto::conduit::v1::{
    self as pb, article_service_client::ArticleServiceClient,
    comment_service_client::CommentServiceClient, profile_service_client::ProfileServiceClient,
    tag_service_client::TagServiceClient, user_service_client::UserServiceClient,
};
use serde_json::{Value, json};

const TIMESTAMP: &str = "<timestamp>";

/// Replaces run-specific parts: the run prefix, timestamps (after checking their format),
/// tokens and comment ids.
fn normalize(value: Value, prefix: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace(prefix, "<run>")),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| normalize(v, prefix)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "createdAt" | "updatedAt" => {
                            assert!(is_realworld_timestamp(&v), "{k}: {v}");
                            json!(TIMESTAMP)
                        }
                        "token" => json!("<token>"),
                        "refreshToken" => json!("<refresh token>"),
                        "id" => json!("<id>"),
                        _ => normalize(v, prefix),
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn timestamp(t: &Option<prost_types::Timestamp>) -> Value {
    let t = t.as_ref().expect("timestamp set");
    let dt = chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("valid");
    json!(dt.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn profile(p: Option<pb::Profile>) -> Value {
    let p = p.expect("profile");
    json!({"username": p.username, "bio": p.bio, "image": p.image, "following": p.following})
}

fn article(a: pb::Article) -> Value {
    let mut v = json!({
        "slug": a.slug, "title": a.title, "description": a.description, "tagList": a.tag_list,
        "createdAt": timestamp(&a.create_time), "updatedAt": timestamp(&a.update_time),
        "favorited": a.favorited, "favoritesCount": a.favorites_count, "author": profile(a.author),
    });
    if let Some(body) = a.body {
        v["body"] = json!(body);
    }
    v
}

/// gRPC lists page instead of counting: a list that fits one page (no next token) holds
/// exactly the `articlesCount` REST reports.
fn whole_list(len: usize, next_page_token: &str) -> usize {
    assert!(next_page_token.is_empty(), "expected a single page");
    len
}

fn comment(c: pb::Comment) -> Value {
    json!({"id": c.id, "createdAt": timestamp(&c.create_time), "updatedAt": timestamp(&c.update_time), "body": c.body, "author": profile(c.author)})
}

fn user(u: Option<pb::User>) -> Value {
    let u = u.expect("user");
    let mut user = json!({"email": u.email, "token": u.token, "username": u.username, "bio": u.bio, "image": u.image});
    // Output only when a session was opened or refreshed; REST omits it otherwise.
    if !u.refresh_token.is_empty() {
        user["refreshToken"] = json!(u.refresh_token);
    }
    user
}

struct Names {
    author: String,
    reader: String,
    title: String,
    tags: [String; 2],
}

impl Names {
    fn new(prefix: &str) -> Names {
        Names {
            author: format!("{prefix}author"),
            reader: format!("{prefix}reader"),
            title: format!("Parity {prefix} article"),
            tags: [format!("{prefix}zeta"), format!("{prefix}alpha")],
        }
    }
}

/// The body of a REST answer that must have `expected` status.
fn answer(expected: u16, (status, body): (reqwest::StatusCode, Value)) -> Value {
    assert_eq!(status.as_u16(), expected, "{body}");
    body
}

async fn over_rest(server: &TestServer, n: &Names) -> Vec<Value> {
    let api = Rest::new(server);
    let mut out = Vec::new();
    let registration = json!({"user": {"username": n.author, "email": format!("{}@example.com", n.author), "password": "password123"}});
    let author = answer(201, api.post("/api/users", None, registration).await);
    let author_token = author["user"]["token"].as_str().expect("token").to_string();
    out.push(author);
    let reader_token = api.register(&n.reader).await;
    let bio = json!({"user": {"bio": "I write"}});
    out.push(answer(
        200,
        api.put("/api/user", Some(&author_token), bio).await,
    ));
    let follow = format!("/api/profiles/{}/follow", n.author);
    out.push(answer(
        200,
        api.post(&follow, Some(&reader_token), json!({})).await,
    ));
    let article = json!({"article": {"title": n.title, "description": "desc", "body": "body", "tagList": n.tags}});
    let created = answer(
        201,
        api.post("/api/articles", Some(&author_token), article)
            .await,
    );
    let slug = created["article"]["slug"]
        .as_str()
        .expect("slug")
        .to_string();
    out.push(created);
    let favorite = format!("/api/articles/{slug}/favorite");
    out.push(answer(
        200,
        api.post(&favorite, Some(&reader_token), json!({})).await,
    ));
    out.push(answer(
        200,
        api.get(&format!("/api/articles/{slug}"), Some(&reader_token))
            .await,
    ));
    out.push(answer(
        200,
        api.get("/api/articles/feed", Some(&reader_token)).await,
    ));
    out.push(answer(
        200,
        api.get(&format!("/api/articles?tag={}", n.tags[0]), None)
            .await,
    ));
    let favorited = format!("/api/articles?favorited={}", n.reader);
    out.push(answer(200, api.get(&favorited, Some(&reader_token)).await));
    let comments = format!("/api/articles/{slug}/comments");
    let comment = json!({"comment": {"body": "Great read"}});
    out.push(answer(
        201,
        api.post(&comments, Some(&reader_token), comment).await,
    ));
    out.push(answer(200, api.get(&comments, Some(&author_token)).await));
    out.push(answer(
        200,
        api.get(&format!("/api/profiles/{}", n.reader), Some(&author_token))
            .await,
    ));
    let tags = answer(200, api.get("/api/tags", None).await);
    out.push(json!({"tags": own_tags(&tags, n)}));
    out
}

/// Other runs' tags are on the same server: keep this run's only.
fn own_tags(tags: &Value, n: &Names) -> Vec<Value> {
    tags["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter(|t| n.tags.iter().any(|own| t.as_str() == Some(own.as_str())))
        .cloned()
        .collect()
}

async fn over_grpc(grpc: &Grpc, n: &Names) -> Vec<Value> {
    let channel = grpc.channel();
    let mut users = UserServiceClient::new(channel.clone());
    let mut profiles = ProfileServiceClient::new(channel.clone());
    let mut articles = ArticleServiceClient::new(channel.clone());
    let mut comments = CommentServiceClient::new(channel.clone());
    let mut out = Vec::new();
    let author = users
        .register(pb::RegisterRequest {
            username: n.author.clone(),
            email: format!("{}@example.com", n.author),
            password: "password123".into(),
        })
        .await
        .expect("register")
        .into_inner()
        .user;
    let author_token = author.as_ref().expect("user").token.clone();
    out.push(json!({"user": user(author)}));
    let reader_token = grpc.register(&n.reader).await;
    let updated = users
        .update_user(grpc_request(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    bio: Some("I write".into()),
                    ..Default::default()
                }),
                update_mask: None,
                ..Default::default()
            },
            Some(&author_token),
        ))
        .await
        .expect("update")
        .into_inner()
        .user;
    out.push(json!({"user": user(updated)}));
    let followed = profiles
        .follow_user(grpc_request(
            pb::FollowUserRequest {
                username: n.author.clone(),
            },
            Some(&reader_token),
        ))
        .await
        .expect("follow")
        .into_inner()
        .profile;
    out.push(json!({"profile": profile(followed)}));
    let created = articles
        .create_article(grpc_request(
            pb::CreateArticleRequest {
                title: n.title.clone(),
                description: "desc".into(),
                body: "body".into(),
                tag_list: n.tags.to_vec(),
            },
            Some(&author_token),
        ))
        .await
        .expect("create")
        .into_inner()
        .article
        .expect("article");
    let slug = created.slug.clone();
    out.push(json!({"article": article(created)}));
    let favorited = articles
        .favorite_article(grpc_request(
            pb::FavoriteArticleRequest { slug: slug.clone() },
            Some(&reader_token),
        ))
        .await
        .expect("favorite")
        .into_inner()
        .article
        .expect("article");
    out.push(json!({"article": article(favorited)}));
    let fetched = articles
        .get_article(grpc_request(
            pb::GetArticleRequest { slug: slug.clone() },
            Some(&reader_token),
        ))
        .await
        .expect("get")
        .into_inner()
        .article
        .expect("article");
    out.push(json!({"article": article(fetched)}));
    let feed = articles
        .feed_articles(grpc_request(
            pb::FeedArticlesRequest::default(),
            Some(&reader_token),
        ))
        .await
        .expect("feed")
        .into_inner();
    out.push(json!({"articlesCount": whole_list(feed.articles.len(), &feed.next_page_token), "articles": feed.articles.into_iter().map(article).collect::<Vec<_>>()}));
    let by_tag = articles
        .list_articles(pb::ListArticlesRequest {
            tag: Some(n.tags[0].clone()),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    out.push(json!({"articlesCount": whole_list(by_tag.articles.len(), &by_tag.next_page_token), "articles": by_tag.articles.into_iter().map(article).collect::<Vec<_>>()}));
    let by_fav = articles
        .list_articles(grpc_request(
            pb::ListArticlesRequest {
                favorited: Some(n.reader.clone()),
                ..Default::default()
            },
            Some(&reader_token),
        ))
        .await
        .expect("list")
        .into_inner();
    out.push(json!({"articlesCount": whole_list(by_fav.articles.len(), &by_fav.next_page_token), "articles": by_fav.articles.into_iter().map(article).collect::<Vec<_>>()}));
    let added = comments
        .add_comment(grpc_request(
            pb::AddCommentRequest {
                slug: slug.clone(),
                body: "Great read".into(),
            },
            Some(&reader_token),
        ))
        .await
        .expect("comment")
        .into_inner()
        .comment
        .expect("comment");
    out.push(json!({"comment": comment(added)}));
    let listed = comments
        .list_comments(grpc_request(
            pb::ListCommentsRequest {
                slug,
                ..Default::default()
            },
            Some(&author_token),
        ))
        .await
        .expect("comments")
        .into_inner()
        .comments;
    out.push(json!({"comments": listed.into_iter().map(comment).collect::<Vec<_>>()}));
    let seen = profiles
        .get_profile(grpc_request(
            pb::GetProfileRequest {
                username: n.reader.clone(),
            },
            Some(&author_token),
        ))
        .await
        .expect("profile")
        .into_inner()
        .profile;
    out.push(json!({"profile": profile(seen)}));
    let tags = TagServiceClient::new(channel)
        .list_tags(pb::ListTagsRequest {})
        .await
        .expect("tags")
        .into_inner()
        .tags;
    out.push(json!({"tags": own_tags(&json!({"tags": tags}), n)}));
    out
}

#[tokio::test]
async fn rest_and_grpc_give_the_same_results() {
    let server = TestServer::start().await;
    let (rest_prefix, grpc_prefix) = (unique("r"), unique("g"));
    let rest = over_rest(&server, &Names::new(&rest_prefix)).await;
    let grpc = over_grpc(&Grpc::new(&server).await, &Names::new(&grpc_prefix)).await;
    assert_eq!(rest.len(), grpc.len());
    for (step, (r, g)) in rest.into_iter().zip(grpc).enumerate() {
        let (r, g) = (normalize(r, &rest_prefix), normalize(g, &grpc_prefix));
        assert_eq!(r, g, "step {step} differs:\nREST: {r:#}\ngRPC: {g:#}");
    }
}
