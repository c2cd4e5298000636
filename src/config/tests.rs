use std::path::Path;

use super::*;

fn load(app_env: Option<&str>, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load(Sources {
        config_dir: Path::new("/nonexistent"),
        app_env: app_env.map(str::to_string),
        env: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

#[test]
fn env_vars_override_defaults() {
    let s = load(
        None,
        &[
            ("CONDUIT__SERVER__ADDR", "0.0.0.0:9999"),
            ("CONDUIT__AUTH__JWT_SECRET", &"s".repeat(40)),
            ("CONDUIT__CORS__ALLOWED_ORIGINS", "http://a,http://b"),
        ],
    )
    .expect("valid");
    assert_eq!(s.server.addr, "0.0.0.0:9999");
    assert_eq!(s.cors.allowed_origins, vec!["http://a", "http://b"]);
    assert_eq!(s.app_env(), AppEnv::Local);
}

#[test]
fn the_development_secret_serves_only_on_loopback() {
    for addr in ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"] {
        load(None, &[("CONDUIT__SERVER__ADDR", addr)]).expect(addr);
    }
    for addr in ["0.0.0.0:8080", "[::]:8080", "192.0.2.1:8080"] {
        let e = load(None, &[("CONDUIT__SERVER__ADDR", addr)]).expect_err(addr);
        assert!(
            e.to_string().contains("auth.jwt_secret: the built-in"),
            "{e}"
        );
    }
}

#[test]
fn unknown_key_is_named() {
    let e = load(None, &[("CONDUIT__SERVER__ADRESS", "x")]).expect_err("unknown key");
    assert!(e.to_string().contains("adress"), "{e}");
}

#[test]
fn invalid_value_is_named() {
    let e = load(None, &[("CONDUIT__SERVER__REQUEST_TIMEOUT", "soon")]).expect_err("bad duration");
    assert!(e.to_string().contains("request_timeout"), "{e}");
    let e = load(None, &[("CONDUIT__SERVER__ADDR", "nope")]).expect_err("bad addr");
    assert!(e.to_string().contains("server.addr"), "{e}");
}

#[test]
fn prod_refuses_the_development_secret() {
    let e = load(Some("prod"), &[]).expect_err("dev secret in prod");
    assert!(e.to_string().contains("auth.jwt_secret"), "{e}");
    let secret = "x".repeat(40);
    assert!(load(Some("prod"), &[("CONDUIT__AUTH__JWT_SECRET", &secret)]).is_ok());
}

#[test]
fn secrets_come_from_files_and_are_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwt");
    std::fs::write(&path, format!("{}\n", "s".repeat(48))).expect("write");
    let s = load(
        Some("dev"),
        &[
            (
                "CONDUIT__AUTH__JWT_SECRET_FILE",
                path.to_str().expect("utf8"),
            ),
            (
                "CONDUIT__DATABASE__URL",
                "postgres://app:hunter2@db:5432/conduit",
            ),
            (
                "CONDUIT__TELEMETRY__SENTRY_DSN",
                "https://dsnkey42@errors.example.com/1",
            ),
        ],
    )
    .expect("valid");
    assert_eq!(s.auth.jwt_secret.expose(), "s".repeat(48));
    let debugged = format!("{s:?} {s:#?}");
    assert!(
        !debugged.contains("hunter2")
            && !debugged.contains(&"s".repeat(48))
            && !debugged.contains("dsnkey42"),
        "Debug of the settings leaks a secret: {debugged}"
    );
    let shown = s.redacted_toml();
    assert!(
        !shown.contains("hunter2") && !shown.contains(&"s".repeat(48)),
        "{shown}"
    );
    assert!(
        shown.contains("postgres://app:<redacted>@db:5432/conduit"),
        "{shown}"
    );
}

#[test]
fn shipped_config_files_load_in_every_environment() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let secret = "p".repeat(40);
    for env in ["local", "dev", "prod"] {
        let settings = Settings::load(Sources {
            config_dir: &dir,
            app_env: Some(env.into()),
            env: [("CONDUIT__AUTH__JWT_SECRET".to_string(), secret.clone())].into(),
        })
        .unwrap_or_else(|e| panic!("{env}: {e}"));
        assert_eq!(settings.app_env().as_str(), env);
    }
}

#[test]
fn cors_origins_are_checked() {
    assert!(
        load(
            None,
            &[("CONDUIT__CORS__ALLOWED_ORIGINS", "https://app.example.com")]
        )
        .is_ok()
    );
    let e = load(
        None,
        &[("CONDUIT__CORS__ALLOWED_ORIGINS", "app.example.com")],
    )
    .expect_err("no scheme");
    assert!(e.to_string().contains("cors.allowed_origins"), "{e}");
}

#[test]
fn zero_durations_are_rejected() {
    let e = load(None, &[("CONDUIT__DATABASE__HEALTH_CHECK_INTERVAL", "0s")])
        .expect_err("zero interval");
    assert!(
        e.to_string().contains("database.health_check_interval"),
        "{e}"
    );
}

#[test]
fn passwords_with_at_signs_are_redacted_whole() {
    assert_eq!(
        redact_url("postgres://app:p@ss@db:5432/x"),
        "postgres://app:<redacted>@db:5432/x"
    );
    assert_eq!(
        redact_url("postgres://app:pw@db/x?application_name=a@b"),
        "postgres://app:<redacted>@db/x?application_name=a@b"
    );
}

#[test]
fn secrets_in_query_parameters_are_redacted() {
    assert_eq!(
        redact_url("postgres://app@db/x?sslmode=disable&password=hunter2&sslpassword=k"),
        "postgres://app@db/x?sslmode=disable&password=<redacted>&sslpassword=<redacted>"
    );
    assert_eq!(
        redact_url("https://user:pw@collector:4317/v1?api_key=abc#frag"),
        "https://user:<redacted>@collector:4317/v1?api_key=<redacted>#frag"
    );
    assert_eq!(
        redact_url("sqlite://data/x.db?mode=rwc"),
        "sqlite://data/x.db?mode=rwc"
    );
}

#[test]
fn unknown_app_env_is_rejected() {
    assert!(load(Some("staging"), &[]).is_err());
}
