//! Settings that must not leak: a type that hides its value from `Debug`, the printable
//! configuration with secrets replaced, and URLs with their credentials cut out.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Settings;

const REDACTED: &str = "<redacted>";

/// A setting that must not leak: `Debug` (so any `?settings` in a log line) shows
/// `<redacted>`, and the value is reached only through [`Secret::expose`]. Serializing
/// does write the value — configuration layering needs it — so printing settings goes
/// through [`Settings::redacted_toml`].
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value.into())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl Settings {
    /// The effective configuration as TOML, with secrets replaced.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.auth.jwt_secret = REDACTED.into();
        if shown.auth.previous_jwt_secret.is_some() {
            shown.auth.previous_jwt_secret = Some(REDACTED.into());
        }
        shown.database.url = redact_url(self.database.url.expose()).into();
        shown.database.listen_url = self
            .database
            .listen_url
            .as_ref()
            .map(|url| redact_url(url.expose()).into());
        shown.telemetry.otlp_endpoint = self.telemetry.otlp_endpoint.as_deref().map(redact_url);
        if shown.telemetry.sentry_dsn.is_some() {
            shown.telemetry.sentry_dsn = Some(REDACTED.into());
        }
        let mut out = format!("# APP_ENV = {}\n", self.app_env().as_str());
        out.push_str("# layers, later ones winning:\n");
        for layer in &self.layers {
            out.push_str(&format!("#   {layer}\n"));
        }
        out.push_str(
            &toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n")),
        );
        out
    }
}

/// The URL with its secrets replaced, for anything that prints it (`config check`, log
/// lines): the password of the user info, and the value of every query parameter whose
/// name says it holds a secret (`?password=`, `sslpassword`, `token`, `api_key`, …).
pub fn redact_url(url: &str) -> String {
    let (head, fragment) = match url.split_once('#') {
        Some((head, fragment)) => (head, Some(fragment)),
        None => (url, None),
    };
    let (base, query) = match head.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (head, None),
    };
    let mut out = redact_user_info(base);
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn redact_user_info(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // Credentials live in the authority, before the path; the host follows its last '@'
    // (a password may contain '@').
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}{tail}"),
        None => url.to_string(),
    }
}
