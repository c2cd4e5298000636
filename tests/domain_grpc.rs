//! Every conduit.v1 operation beyond users over gRPC, with the error codes, against the
//! real server; and the data it writes is the data REST reads.

mod common;

use common::{Grpc, Rest, TestServer, grpc_request, unique};
use conduit::proto::conduit::v1::{
    self as pb, article_service_client::ArticleServiceClient,
    comment_service_client::CommentServiceClient, profile_service_client::ProfileServiceClient,
    tag_service_client::TagServiceClient,
};
use reqwest::StatusCode;
use tonic::Code;
use tonic_types::StatusExt;

fn create(title: &str, tags: &[&str]) -> pb::CreateArticleRequest {
    pb::CreateArticleRequest {
        title: title.into(),
        description: "Ever wonder how?".into(),
        body: "You have to believe".into(),
        tag_list: tags.iter().map(|t| t.to_string()).collect(),
    }
}

#[tokio::test]
async fn profiles_over_grpc() {
    let server = TestServer::start().await;
    let grpc = Grpc::new(&server).await;
    let (alice, bob) = (unique("alice"), unique("bob"));
    let token = grpc.register(&alice).await;
    grpc.register(&bob).await;
    let mut profiles = ProfileServiceClient::new(grpc.channel());

    let profile = profiles
        .get_profile(pb::GetProfileRequest {
            username: bob.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(
        profile,
        pb::Profile {
            username: bob.clone(),
            bio: None,
            image: None,
            following: false
        }
    );

    let followed = profiles
        .follow_user(grpc_request(
            pb::FollowUserRequest {
                username: bob.clone(),
            },
            Some(&token),
        ))
        .await
        .expect("follow")
        .into_inner()
        .profile
        .expect("profile");
    assert!(followed.following);
    let seen = profiles
        .get_profile(grpc_request(
            pb::GetProfileRequest {
                username: bob.clone(),
            },
            Some(&token),
        ))
        .await
        .expect("get")
        .into_inner()
        .profile
        .expect("profile");
    assert!(seen.following);
    let unfollowed = profiles
        .unfollow_user(grpc_request(
            pb::UnfollowUserRequest {
                username: bob.clone(),
            },
            Some(&token),
        ))
        .await
        .expect("unfollow")
        .into_inner()
        .profile
        .expect("profile");
    assert!(!unfollowed.following);

    let missing = profiles
        .get_profile(pb::GetProfileRequest {
            username: "nobody-at-all".into(),
        })
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "profile not found");
    let anonymous = profiles
        .follow_user(pb::FollowUserRequest {
            username: bob.clone(),
        })
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn articles_over_grpc_are_the_articles_rest_sees() {
    let server = TestServer::start().await;
    let grpc = Grpc::new(&server).await;
    let (author, reader) = (unique("author"), unique("reader"));
    let author_token = grpc.register(&author).await;
    let reader_token = grpc.register(&reader).await;
    let mut articles = ArticleServiceClient::new(grpc.channel());
    let tag = unique("tag");

    let created = articles
        .create_article(grpc_request(
            create("gRPC dragons", &[&tag, "b"]),
            Some(&author_token),
        ))
        .await
        .expect("create")
        .into_inner()
        .article
        .expect("article");
    assert_eq!(created.slug, "grpc-dragons");
    let mut expected_tags = vec![tag.clone(), "b".to_string()];
    expected_tags.sort();
    assert_eq!(created.tag_list, expected_tags, "sorted");
    assert_eq!(created.body.as_deref(), Some("You have to believe"));
    assert!(created.create_time.is_some());

    // Visible over REST, field for field.
    let api = Rest::new(&server);
    let (status, rest) = api
        .get(&format!("/api/articles/{}", created.slug), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rest["article"]["title"], "gRPC dragons");
    assert_eq!(rest["article"]["author"]["username"], author.as_str());

    // And a REST-created article is visible over gRPC.
    let rest_slug = api.publish(&author_token, "REST dragons", &[&tag]).await;
    let fetched = articles
        .get_article(pb::GetArticleRequest {
            slug: rest_slug.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .article
        .expect("article");
    assert_eq!(fetched.title, "REST dragons");

    let list = articles
        .list_articles(pb::ListArticlesRequest {
            tag: Some(tag.clone()),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(!list.next_page_token.is_empty(), "a second article follows");
    assert_eq!(list.articles.len(), 1);
    assert_eq!(list.articles[0].slug, rest_slug, "newest first");
    assert_eq!(list.articles[0].body, None, "lists leave the body out");

    let favorited = articles
        .favorite_article(grpc_request(
            pb::FavoriteArticleRequest {
                slug: created.slug.clone(),
            },
            Some(&reader_token),
        ))
        .await
        .expect("favorite")
        .into_inner()
        .article
        .expect("article");
    assert!(favorited.favorited);
    assert_eq!(favorited.favorites_count, 1);
    let by_fav = articles
        .list_articles(grpc_request(
            pb::ListArticlesRequest {
                favorited: Some(reader.clone()),
                ..Default::default()
            },
            Some(&reader_token),
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(by_fav.articles.len(), 1);
    assert!(by_fav.next_page_token.is_empty());
    assert!(by_fav.articles[0].favorited);
    let unfavorited = articles
        .unfavorite_article(grpc_request(
            pb::UnfavoriteArticleRequest {
                slug: created.slug.clone(),
            },
            Some(&reader_token),
        ))
        .await
        .expect("unfavorite")
        .into_inner()
        .article
        .expect("article");
    assert_eq!(unfavorited.favorites_count, 0);

    grpc.follow(&reader_token, &author).await;
    let feed = articles
        .feed_articles(grpc_request(
            pb::FeedArticlesRequest::default(),
            Some(&reader_token),
        ))
        .await
        .expect("feed")
        .into_inner();
    assert_eq!(feed.articles.len(), 2);
    assert!(
        feed.articles
            .iter()
            .all(|a| a.author.as_ref().is_some_and(|p| p.following))
    );

    let updated = articles
        .update_article(grpc_request(
            pb::UpdateArticleRequest {
                slug: created.slug.clone(),
                article: Some(pb::Article {
                    title: "gRPC dragons, revised".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".into(), "tag_list".into()],
                }),
            },
            Some(&author_token),
        ))
        .await
        .expect("update")
        .into_inner()
        .article
        .expect("article");
    assert_eq!(updated.slug, "grpc-dragons-revised");
    assert!(updated.tag_list.is_empty());

    let forbidden = articles
        .delete_article(grpc_request(
            pb::DeleteArticleRequest {
                slug: updated.slug.clone(),
            },
            Some(&reader_token),
        ))
        .await
        .expect_err("not the author");
    assert_eq!(forbidden.code(), Code::PermissionDenied);
    assert_eq!(forbidden.message(), "article forbidden");
    articles
        .delete_article(grpc_request(
            pb::DeleteArticleRequest {
                slug: updated.slug.clone(),
            },
            Some(&author_token),
        ))
        .await
        .expect("delete");
    let gone = articles
        .get_article(pb::GetArticleRequest {
            slug: updated.slug.clone(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(
        api.get(&format!("/api/articles/{}", updated.slug), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn article_errors_over_grpc() {
    let server = TestServer::start().await;
    let grpc = Grpc::new(&server).await;
    let token = grpc.register(&unique("writer")).await;
    let mut articles = ArticleServiceClient::new(grpc.channel());

    let invalid = articles
        .create_article(grpc_request(
            pb::CreateArticleRequest {
                title: "t".into(),
                ..Default::default()
            },
            Some(&token),
        ))
        .await
        .expect_err("blank fields");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = invalid
        .get_details_bad_request()
        .expect("details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["description", "body"]);

    let anonymous = articles
        .create_article(create("t", &[]))
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let feed = articles
        .feed_articles(pb::FeedArticlesRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(feed.code(), Code::Unauthenticated);
    let bad_page = articles
        .list_articles(pb::ListArticlesRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("bad page");
    assert_eq!(bad_page.code(), Code::InvalidArgument);
    assert_eq!(
        bad_page
            .get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "page_size"
    );
    let missing = articles
        .favorite_article(grpc_request(
            pb::FavoriteArticleRequest {
                slug: "none".into(),
            },
            Some(&token),
        ))
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn comments_and_tags_over_grpc() {
    let server = TestServer::start().await;
    let grpc = Grpc::new(&server).await;
    let (author, commenter) = (unique("author"), unique("commenter"));
    let author_token = grpc.register(&author).await;
    let commenter_token = grpc.register(&commenter).await;
    let tag = unique("tag");
    let slug = grpc.publish(&author_token, "Talk", &[&tag]).await;
    let mut comments = CommentServiceClient::new(grpc.channel());

    let comment = comments
        .add_comment(grpc_request(
            pb::AddCommentRequest {
                slug: slug.clone(),
                body: "Nice".into(),
            },
            Some(&commenter_token),
        ))
        .await
        .expect("add")
        .into_inner()
        .comment
        .expect("comment");
    assert_eq!(comment.body, "Nice");
    assert_eq!(
        comment.author.as_ref().map(|a| a.username.as_str()),
        Some(commenter.as_str())
    );

    let listed = comments
        .list_comments(pb::ListCommentsRequest {
            slug: slug.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .comments;
    assert_eq!(listed, vec![comment.clone()]);

    let blank = comments
        .add_comment(grpc_request(
            pb::AddCommentRequest {
                slug: slug.clone(),
                body: " ".into(),
            },
            Some(&commenter_token),
        ))
        .await
        .expect_err("blank");
    assert_eq!(blank.code(), Code::InvalidArgument);
    let forbidden = comments
        .delete_comment(grpc_request(
            pb::DeleteCommentRequest {
                slug: slug.clone(),
                id: comment.id,
            },
            Some(&author_token),
        ))
        .await
        .expect_err("not the author");
    assert_eq!(forbidden.code(), Code::PermissionDenied);
    let missing = comments
        .delete_comment(grpc_request(
            pb::DeleteCommentRequest {
                slug: slug.clone(),
                id: 424242,
            },
            Some(&commenter_token),
        ))
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    comments
        .delete_comment(grpc_request(
            pb::DeleteCommentRequest {
                slug: slug.clone(),
                id: comment.id,
            },
            Some(&commenter_token),
        ))
        .await
        .expect("delete");
    assert!(
        comments
            .list_comments(pb::ListCommentsRequest {
                slug: slug.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .comments
            .is_empty()
    );
    let no_article = comments
        .list_comments(pb::ListCommentsRequest {
            slug: "none".into(),
            ..Default::default()
        })
        .await
        .expect_err("missing article");
    assert_eq!(no_article.code(), Code::NotFound);

    let tags = TagServiceClient::new(grpc.channel())
        .list_tags(pb::ListTagsRequest {})
        .await
        .expect("tags")
        .into_inner()
        .tags;
    assert!(tags.contains(&tag));
}
