//! Loading the configuration: defaults, then the TOML file, then `BERTH_*` environment
//! variables (`__` separates nesting: `BERTH_SERVER__LISTEN` is `server.listen`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use berth_core::config::Config;

/// Environment variables that are command-line settings, not configuration keys: the first
/// admin's password and the admin CLI's server and credentials.
const NOT_CONFIG_KEYS: &[&str] = &[
    "BERTH_CONFIG",
    "BERTH_BIN",
    "BERTH_ADMIN_PASSWORD",
    "BERTH_URL",
    "BERTH_USER",
    "BERTH_PASSWORD",
];

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
            // Lists from the environment are comma-separated:
            // BERTH_SERVER__TRUSTED_PROXIES=10.0.0.0/8,192.168.1.5
            .list_separator(",")
            .with_list_parse_key("server.trusted_proxies")
            .source(Some(env_overrides())),
    );
    let loaded: Config = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .with_context(|| match file {
            Some(p) => format!(
                "invalid configuration in {} or BERTH_* variables",
                p.display()
            ),
            None => "invalid configuration in BERTH_* variables".to_owned(),
        })?;
    loaded.validate().map_err(anyhow::Error::msg)?;
    berth_jobs::validate_schedules(&loaded)?;
    Ok(loaded)
}

/// The effective configuration as TOML, secrets masked.
pub fn render(config: &Config) -> String {
    let mut config = config.clone();
    if !config.auth.ldap.bind_password.is_empty() {
        config.auth.ldap.bind_password = "********".into();
    }
    config.database.url = berth_meta::redact_url(&config.database.url);
    config.database.listen_url = berth_meta::redact_url(&config.database.listen_url);
    if !config.storage.s3.secret_access_key.is_empty() {
        config.storage.s3.secret_access_key = "********".into();
    }
    for p in &mut config.proxy.projects {
        if !p.password.is_empty() {
            p.password = "********".into();
        }
    }
    toml::to_string_pretty(&config).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readme_reference() -> String {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("<!-- config-reference:start -->")
            .expect("README has the reference start marker");
        let end = readme
            .find("<!-- config-reference:end -->")
            .expect("README has the reference end marker");
        let block = &readme[start..end];
        let body = block.split_once("```toml\n").expect("a toml fence").1;
        body.split_once("```")
            .expect("a closing fence")
            .0
            .to_owned()
    }

    /// The README's configuration reference documents exactly the defaults of the code.
    #[test]
    fn readme_reference_matches_the_defaults() {
        let text = readme_reference();
        let parsed: Config =
            toml::from_str(&text).expect("the README reference parses with unknown keys refused");
        assert_eq!(
            parsed,
            Config::default(),
            "a default in the README differs from the code"
        );
        let defaults: toml::Table =
            toml::from_str(&render(&Config::default())).expect("defaults render as TOML");
        let documented: toml::Table = toml::from_str(&text).expect("reference parses as a table");
        for (section, value) in &defaults {
            match value {
                toml::Value::Table(keys) => {
                    let doc = documented
                        .get(section)
                        .and_then(|v| v.as_table())
                        .unwrap_or_else(|| {
                            panic!("section [{section}] is missing from the README reference")
                        });
                    for key in keys.keys() {
                        assert!(
                            doc.contains_key(key),
                            "{section}.{key} is missing from the README reference"
                        );
                    }
                }
                _ => assert!(
                    documented.contains_key(section),
                    "{section} is missing from the README reference"
                ),
            }
        }
        for optional in ["external_url", "tls_cert", "tls_key", "ca_file"] {
            assert!(
                text.contains(&format!("# {optional} = ")),
                "{optional} is not documented"
            );
        }
    }
}
