//! Every RealWorld REST operation beyond users, with its error cases, against the real server.

mod common;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use common::{Rest, TestServer, is_realworld_timestamp, unique};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One integer from a side connection to the server's database.
async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .expect("query")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

fn new_article(title: &str, tags: &[&str]) -> Value {
    json!({"article": {"title": title, "description": "Ever wonder how?", "body": "You have to believe", "tagList": tags}})
}

#[tokio::test]
async fn profiles_and_follows() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let (alice, bob) = (unique("alice"), unique("bob"));
    let alice_token = api.register(&alice).await;
    api.register(&bob).await;

    let (status, body) = api.get(&format!("/api/profiles/{bob}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"profile": {"username": bob, "bio": null, "image": null, "following": false}})
    );

    let (status, body) = api
        .post(
            &format!("/api/profiles/{bob}/follow"),
            Some(&alice_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["profile"]["following"], true);
    // Following twice is still following.
    api.follow(&alice_token, &bob).await;
    let (_, body) = api
        .get(&format!("/api/profiles/{bob}"), Some(&alice_token))
        .await;
    assert_eq!(body["profile"]["following"], true);
    let (_, body) = api.get(&format!("/api/profiles/{bob}"), None).await;
    assert_eq!(
        body["profile"]["following"], false,
        "anonymous viewers follow nobody"
    );

    let (status, body) = api
        .delete(&format!("/api/profiles/{bob}/follow"), Some(&alice_token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["profile"]["following"], false);

    let (status, body) = api.get("/api/profiles/nobody-at-all", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"errors": {"profile": ["not found"]}}));
    let (status, body) = api
        .post(&format!("/api/profiles/{bob}/follow"), None, json!({}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"errors": {"token": ["is missing"]}}));
    let (status, _) = api
        .post(
            "/api/profiles/nobody-at-all/follow",
            Some(&alice_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .get(&format!("/api/profiles/{bob}"), Some("bad.token.here"))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a bad token is refused even where auth is optional"
    );
}

#[tokio::test]
async fn article_lifecycle_and_shapes() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let author = unique("author");
    let token = api.register(&author).await;

    let (status, body) = api
        .post(
            "/api/articles",
            Some(&token),
            new_article(
                "How to train your dragon",
                &["training", "dragons", "dragons"],
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let article = &body["article"];
    let slug = article["slug"].as_str().expect("slug").to_string();
    assert!(slug.starts_with("how-to-train-your-dragon"), "{slug}");
    assert_eq!(article["title"], "How to train your dragon");
    assert_eq!(article["body"], "You have to believe");
    assert_eq!(
        article["tagList"],
        json!(["dragons", "training"]),
        "sorted, deduplicated"
    );
    assert_eq!(article["favorited"], false);
    assert_eq!(article["favoritesCount"], 0);
    assert_eq!(
        article["author"],
        json!({"username": author, "bio": null, "image": null, "following": false})
    );
    assert!(
        is_realworld_timestamp(&article["createdAt"]),
        "{}",
        article["createdAt"]
    );
    assert!(is_realworld_timestamp(&article["updatedAt"]));
    let keys: Vec<&String> = article.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 10, "exactly the spec's fields: {keys:?}");

    // Same title, distinct slug.
    let (_, again) = api
        .post(
            "/api/articles",
            Some(&token),
            new_article("How to train your dragon", &[]),
        )
        .await;
    let second_slug = again["article"]["slug"].as_str().expect("slug").to_string();
    assert_ne!(second_slug, slug);
    assert_eq!(again["article"]["tagList"], json!([]));

    let (status, fetched) = api.get(&format!("/api/articles/{slug}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["article"], body["article"]);

    // Update: a new title gives a new slug; the old one is gone.
    let (status, updated) = api
        .put(
            &format!("/api/articles/{slug}"),
            Some(&token),
            json!({"article": {"title": "Did you train your dragon?", "tagList": ["x"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let new_slug = updated["article"]["slug"]
        .as_str()
        .expect("slug")
        .to_string();
    assert_eq!(new_slug, "did-you-train-your-dragon");
    assert_eq!(
        updated["article"]["description"], "Ever wonder how?",
        "untouched"
    );
    assert_eq!(updated["article"]["tagList"], json!(["x"]));
    assert_eq!(
        api.get(&format!("/api/articles/{slug}"), None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = api
        .put(
            &format!("/api/articles/{new_slug}"),
            Some(&token),
            json!({"article": {"body": ""}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, json!({"errors": {"body": ["can't be blank"]}}));

    // Someone else may neither edit nor delete it.
    let intruder = api.register(&unique("intruder")).await;
    let (status, body) = api
        .put(
            &format!("/api/articles/{new_slug}"),
            Some(&intruder),
            json!({"article": {"title": "mine"}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"errors": {"article": ["forbidden"]}}));
    let (status, body) = api
        .delete(&format!("/api/articles/{new_slug}"), Some(&intruder))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"errors": {"article": ["forbidden"]}}));

    let (status, body) = api
        .delete(&format!("/api/articles/{new_slug}"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (status, body) = api.get(&format!("/api/articles/{new_slug}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"errors": {"article": ["not found"]}}));
}

#[tokio::test]
async fn article_validation_and_auth() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let token = api.register(&unique("writer")).await;

    let (status, body) = api
        .post(
            "/api/articles",
            Some(&token),
            json!({"article": {"title": "  "}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"title": ["can't be blank"], "description": ["can't be blank"], "body": ["can't be blank"]}})
    );
    let (status, body) = api.post("/api/articles", None, new_article("t", &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"errors": {"token": ["is missing"]}}));
    assert_eq!(
        api.put("/api/articles/none", Some(&token), json!({"article": {}}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete("/api/articles/none", Some(&token)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete("/api/articles/none", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = api.get("/api/articles/feed", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"errors": {"token": ["is missing"]}}));

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("limit=ten", "limit"),
    ] {
        let (status, body) = api.get(&format!("/api/articles?{query}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(body["errors"][field].is_array(), "{query}: {body}");
    }
}

#[tokio::test]
async fn listing_filters_pagination_and_feed() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let (writer, other, reader) = (unique("writer"), unique("other"), unique("reader"));
    let writer_token = api.register(&writer).await;
    let other_token = api.register(&other).await;
    let reader_token = api.register(&reader).await;
    let tag = unique("tag");

    let mut slugs = Vec::new();
    for i in 0..3 {
        slugs.push(
            api.publish(&writer_token, &format!("Writer {i}"), &[&tag])
                .await,
        );
    }
    api.publish(&other_token, "Other's", &["elsewhere"]).await;

    // Newest first, no body, total independent of the page.
    let (status, page) = api
        .get(&format!("/api/articles?author={writer}&limit=2"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["articlesCount"], 3);
    let listed: Vec<&str> = page["articles"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["slug"].as_str())
        .collect();
    assert_eq!(listed, [slugs[2].as_str(), slugs[1].as_str()]);
    assert!(
        page["articles"][0].get("body").is_none(),
        "lists leave the body out"
    );
    let (_, rest) = api
        .get(
            &format!("/api/articles?author={writer}&limit=2&offset=2"),
            None,
        )
        .await;
    assert_eq!(rest["articles"][0]["slug"], slugs[0].as_str());
    assert_eq!(rest["articlesCount"], 3);

    let (_, by_tag) = api.get(&format!("/api/articles?tag={tag}"), None).await;
    assert_eq!(by_tag["articlesCount"], 3);
    let (_, none) = api.get("/api/articles?tag=no-such-tag", None).await;
    assert_eq!(none, json!({"articles": [], "articlesCount": 0}));
    let (_, tags) = api.get("/api/tags", None).await;
    let tags: Vec<&str> = tags["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tags.contains(&tag.as_str()) && tags.contains(&"elsewhere"),
        "{tags:?}"
    );
    let mut sorted = tags.clone();
    sorted.sort();
    assert_eq!(tags, sorted);

    // Favorites: counted, flagged for the viewer, filterable, idempotent, removable.
    let (status, fav) = api
        .post(
            &format!("/api/articles/{}/favorite", slugs[0]),
            Some(&reader_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fav["article"]["favorited"], true);
    assert_eq!(fav["article"]["favoritesCount"], 1);
    api.favorite(&reader_token, &slugs[0]).await;
    api.favorite(&other_token, &slugs[0]).await;
    let (_, favorited) = api
        .get(
            &format!("/api/articles?favorited={reader}"),
            Some(&reader_token),
        )
        .await;
    assert_eq!(favorited["articlesCount"], 1);
    assert_eq!(favorited["articles"][0]["favorited"], true);
    assert_eq!(favorited["articles"][0]["favoritesCount"], 2);
    let (_, anonymous) = api
        .get(&format!("/api/articles?favorited={reader}"), None)
        .await;
    assert_eq!(anonymous["articles"][0]["favorited"], false);
    let (_, combined) = api
        .get(
            &format!("/api/articles?favorited={reader}&author={other}"),
            None,
        )
        .await;
    assert_eq!(combined["articlesCount"], 0, "filters combine");
    let (status, unfav) = api
        .delete(
            &format!("/api/articles/{}/favorite", slugs[0]),
            Some(&reader_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unfav["article"]["favorited"], false);
    assert_eq!(unfav["article"]["favoritesCount"], 1);
    assert_eq!(
        api.post(
            "/api/articles/none/favorite",
            Some(&reader_token),
            json!({})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.post(
            &format!("/api/articles/{}/favorite", slugs[0]),
            None,
            json!({})
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );

    // Feed: only followed authors, with following = true.
    let (_, empty) = api.get("/api/articles/feed", Some(&reader_token)).await;
    assert_eq!(empty, json!({"articles": [], "articlesCount": 0}));
    api.follow(&reader_token, &writer).await;
    let (status, feed) = api
        .get("/api/articles/feed?limit=10", Some(&reader_token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(feed["articlesCount"], 3);
    for article in feed["articles"].as_array().expect("array") {
        assert_eq!(article["author"]["username"], writer.as_str());
        assert_eq!(article["author"]["following"], true);
    }
}

#[tokio::test]
async fn comments_and_what_deleting_an_article_takes_with_it() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let (author, commenter) = (unique("author"), unique("commenter"));
    let author_token = api.register(&author).await;
    let commenter_token = api.register(&commenter).await;
    let tag = unique("doomed");
    let slug = api.publish(&author_token, "Commented", &[&tag]).await;
    let comments_path = format!("/api/articles/{slug}/comments");

    let (status, first) = api
        .post(
            &comments_path,
            Some(&commenter_token),
            json!({"comment": {"body": "First!"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let comment = &first["comment"];
    assert!(comment["id"].is_i64());
    assert_eq!(comment["body"], "First!");
    assert!(
        is_realworld_timestamp(&comment["createdAt"])
            && is_realworld_timestamp(&comment["updatedAt"])
    );
    assert_eq!(comment["author"]["username"], commenter.as_str());
    api.comment(&author_token, &slug, "Thanks").await;

    let (status, list) = api.get(&comments_path, None).await;
    assert_eq!(status, StatusCode::OK);
    let bodies: Vec<&str> = list["comments"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["body"].as_str())
        .collect();
    assert_eq!(bodies, ["Thanks", "First!"], "newest first");

    let (status, body) = api
        .post(
            &comments_path,
            Some(&commenter_token),
            json!({"comment": {"body": ""}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, json!({"errors": {"body": ["can't be blank"]}}));
    assert_eq!(
        api.post(&comments_path, None, json!({"comment": {"body": "x"}}))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.post(
            "/api/articles/none/comments",
            Some(&commenter_token),
            json!({"comment": {"body": "x"}})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/api/articles/none/comments", None).await.0,
        StatusCode::NOT_FOUND
    );

    let first_id = comment["id"].as_i64().expect("id");
    let (status, body) = api
        .delete(&format!("{comments_path}/{first_id}"), Some(&author_token))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only the comment's author deletes it"
    );
    assert_eq!(body, json!({"errors": {"comment": ["forbidden"]}}));
    let (status, body) = api
        .delete(&format!("{comments_path}/999999"), Some(&author_token))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"errors": {"comment": ["not found"]}}));
    assert_eq!(
        api.delete(&format!("{comments_path}/abc"), Some(&author_token))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, _) = api
        .delete(
            &format!("{comments_path}/{first_id}"),
            Some(&commenter_token),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.comments(&slug).await.len(), 1);

    // Deleting the article removes its comments, favorites and tag links: checked in the
    // tables themselves, since a missing article already hides them from the API.
    let side = Database::connect(&server.db.url)
        .await
        .expect("side connection");
    let article_id = scalar(
        &side,
        &format!("SELECT id FROM articles WHERE slug = '{slug}'"),
    )
    .await;
    let linked =
        |table: &str| format!("SELECT COUNT(*) FROM {table} WHERE article_id = {article_id}");
    api.favorite(&commenter_token, &slug).await;
    for table in ["comments", "favorites", "article_tags"] {
        assert!(
            scalar(&side, &linked(table)).await > 0,
            "{table} has rows to delete"
        );
    }
    assert_eq!(
        api.delete(&format!("/api/articles/{slug}"), Some(&author_token))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get(&comments_path, None).await.0, StatusCode::NOT_FOUND);
    for table in ["comments", "favorites", "article_tags"] {
        assert_eq!(
            scalar(&side, &linked(table)).await,
            0,
            "{table} rows left behind"
        );
    }
    side.close().await.ok();
    let (_, favorited) = api
        .get(&format!("/api/articles?favorited={commenter}"), None)
        .await;
    assert_eq!(favorited["articlesCount"], 0);
    let (_, tags) = api.get("/api/tags", None).await;
    assert!(
        !tags["tags"].as_array().expect("tags").contains(&json!(tag)),
        "an unused tag is not listed"
    );
}

#[tokio::test]
async fn a_web_client_on_another_origin_can_call_the_api() {
    let server =
        TestServer::start_with(&[("CONDUIT__CORS__ALLOWED_ORIGINS", "http://localhost:4200")])
            .await;
    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, server.url("/api/articles"))
        .header("origin", "http://localhost:4200")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:4200"
    );
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );

    let foreign = http
        .get(server.url("/api/tags"))
        .header("origin", "http://evil.example.com")
        .send()
        .await
        .expect("get");
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn slugs_stay_unique_and_routable() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let token = api.register(&unique("slugger")).await;

    // "feed" is a route, not a slug: an article titled "Feed" must still be reachable.
    let (status, created) = api
        .post("/api/articles", Some(&token), new_article("Feed", &[]))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let slug = created["article"]["slug"]
        .as_str()
        .expect("slug")
        .to_string();
    assert_ne!(slug, "feed");
    assert_eq!(
        api.get(&format!("/api/articles/{slug}"), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.delete(&format!("/api/articles/{slug}"), Some(&token))
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    // Concurrent creates with one title: every one succeeds, each with its own slug.
    let title = format!("Same title {}", unique(""));
    let creates = (0..8).map(|_| {
        let api = Rest::new(&server);
        let token = token.clone();
        let body = new_article(&title, &["race"]);
        async move { api.post("/api/articles", Some(&token), body).await }
    });
    let results = futures_util::future::join_all(creates).await;
    let mut slugs = std::collections::HashSet::new();
    for (status, body) in results {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        slugs.insert(body["article"]["slug"].as_str().expect("slug").to_string());
    }
    assert_eq!(slugs.len(), 8, "distinct slugs: {slugs:?}");
}

#[tokio::test]
async fn oversized_fields_are_422_not_500() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let token = api.register(&unique("limits")).await;
    let (status, body) = api
        .post(
            "/api/articles",
            Some(&token),
            new_article(&"t".repeat(300), &[]),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"title": ["is too long (maximum is 255 characters)"]}})
    );
    let many: Vec<String> = (0..50).map(|i| format!("tag{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, body) = api
        .post("/api/articles", Some(&token), new_article("Tags", &many))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["tagList"].is_array(), "{body}");
    let (status, body) = api
        .post(
            "/api/users",
            None,
            json!({"user": {"username": "u".repeat(100), "email": "x@y.z", "password": "p"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["username"].is_array(), "{body}");
}

#[tokio::test]
async fn taken_names_on_update_are_422_as_the_spec_says() {
    let server = TestServer::start().await;
    let api = Rest::new(&server);
    let first = unique("first");
    api.register(&first).await;
    let token = api.register(&unique("second")).await;
    let (status, body) = api
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"username": first}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"username": ["has already been taken"]}})
    );
    let (status, body) = api
        .put(
            "/api/user",
            Some(&token),
            json!({"user": {"email": format!("{first}@example.com")}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"errors": {"email": ["has already been taken"]}})
    );
}
