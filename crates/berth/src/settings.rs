//! Loading the configuration: defaults, then the TOML file, then `BERTH_*` environment
//! variables (`__` separates nesting: `BERTH_SERVER__LISTEN` is `server.listen`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use berth_core::config::Config;

/// Environment variables that are command-line settings, not configuration keys.
const NOT_CONFIG_KEYS: &[&str] = &["BERTH_CONFIG", "BERTH_BIN"];

fn env_overrides() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("BERTH_") && !NOT_CONFIG_KEYS.contains(&k.as_str()))
        .collect()
}

pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
    let defaults = config::Config::try_from(&Config::default()).context("encoding the defaults")?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        if !path.exists() {
            anyhow::bail!("configuration file {} does not exist", path.display());
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("BERTH")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(env_overrides())),
    );
    let loaded: Config = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .with_context(|| match file {
            Some(p) => format!("invalid configuration in {} or BERTH_* variables", p.display()),
            None => "invalid configuration in BERTH_* variables".to_owned(),
        })?;
    loaded.validate().map_err(anyhow::Error::msg)?;
    Ok(loaded)
}

/// The effective configuration as TOML, secrets masked.
pub fn render(config: &Config) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}
