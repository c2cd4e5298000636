//! Where settings come from and in which order: built-in defaults, the profiles compiled
//! into the binary, files under `config/`, the environment (with `*_FILE` secret mounts).

use std::{collections::HashMap, path::Path};

use config::{Config, Environment, File, FileFormat};

use super::{AppEnv, ConfigError, Settings};

const ENV_PREFIX: &str = "CONDUIT";
const ENV_SEPARATOR: &str = "__";
/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: &[&str] = &[
    "cors.allowed_origins",
    "docs.servers",
    "server.trusted_proxies",
];

/// Where the layers come from; `from_process` for the binary, explicit maps for tests.
pub struct Sources<'a> {
    pub config_dir: &'a Path,
    pub app_env: Option<String>,
    pub env: HashMap<String, String>,
}

impl Sources<'static> {
    pub fn from_process() -> Self {
        // A missing .env is normal; values already in the environment win over it.
        let _ = dotenvy::dotenv();
        Sources {
            config_dir: Path::new("config"),
            app_env: std::env::var("APP_ENV").ok(),
            env: std::env::vars().collect(),
        }
    }
}

impl Settings {
    pub fn load(sources: Sources<'_>) -> Result<Settings, ConfigError> {
        let app_env: AppEnv = sources.app_env.as_deref().unwrap_or("local").parse()?;
        let defaults = Config::try_from(&Settings::default()).map_err(err)?;
        let env = resolve_secret_files(sources.env)?;
        let variables = env
            .keys()
            .filter(|k| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .count();

        let mut environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .list_separator(",")
            .try_parsing(true)
            .source(Some(env.into_iter().collect()));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }

        let mut layers = vec!["built-in defaults".to_string()];
        let mut builder = Config::builder().add_source(defaults);
        // The profiles are compiled in, so the binary behaves the same from any working
        // directory (a container, /usr/local/bin); files on disk override them.
        for (name, text) in [
            ("default", BUILT_IN_DEFAULT),
            (app_env.as_str(), built_in_profile(app_env)),
        ] {
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
            layers.push(format!("built-in config/{name}.toml"));
        }
        for name in ["default", app_env.as_str()] {
            let path = sources.config_dir.join(format!("{name}.toml"));
            if path.is_file() {
                layers.push(format!("{} (file)", path.display()));
            }
            builder = builder.add_source(file(sources.config_dir, name));
        }
        if variables > 0 {
            layers.push(format!(
                "environment ({variables} {ENV_PREFIX}__* variables)"
            ));
        }
        let layered = builder.add_source(environment).build().map_err(err)?;
        let mut settings: Settings = layered.try_deserialize().map_err(err)?;
        settings.environment = Some(app_env);
        settings.layers = layers;
        settings.validate()?;
        Ok(settings)
    }

    pub fn app_env(&self) -> AppEnv {
        self.environment.unwrap_or(AppEnv::Local)
    }
}

const BUILT_IN_DEFAULT: &str = include_str!("../../config/default.toml");

fn built_in_profile(app_env: AppEnv) -> &'static str {
    match app_env {
        AppEnv::Local => "",
        AppEnv::Dev => include_str!("../../config/dev.toml"),
        AppEnv::Prod => include_str!("../../config/prod.toml"),
    }
}

fn file(dir: &Path, name: &str) -> File<config::FileSourceFile, FileFormat> {
    File::from(dir.join(format!("{name}.toml")))
        .format(FileFormat::Toml)
        .required(false)
}

fn err(e: config::ConfigError) -> ConfigError {
    ConfigError(e.to_string())
}

/// `CONDUIT__AUTH__JWT_SECRET_FILE=/run/secrets/jwt` becomes `CONDUIT__AUTH__JWT_SECRET`
/// with the file's content (trailing newline trimmed), as Kubernetes secret mounts expect.
fn resolve_secret_files(
    env: HashMap<String, String>,
) -> Result<HashMap<String, String>, ConfigError> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let mut resolved = HashMap::with_capacity(env.len());
    for (name, value) in env {
        if !name.starts_with(&prefix) {
            continue;
        }
        match name.strip_suffix("_FILE") {
            Some(target) => {
                let content = std::fs::read_to_string(&value).map_err(|e| {
                    ConfigError(format!("{name}: cannot read secret file {value:?}: {e}"))
                })?;
                resolved.insert(
                    target.to_string(),
                    content.trim_end_matches(['\n', '\r']).to_string(),
                );
            }
            None => {
                resolved.entry(name).or_insert(value);
            }
        }
    }
    Ok(resolved)
}
