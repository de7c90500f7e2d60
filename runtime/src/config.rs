//! Layered configuration: compiled-in defaults, then a TOML file, then prefixed env vars.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A configuration that could not be loaded; the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[source] Box<figment::Error>);

/// Loads `T` from its `Default`, then `file` (when given), then env vars `{prefix}_A__B` for
/// the key `a.b`. Unknown keys are rejected by the structs' `deny_unknown_fields`.
pub fn load_config<T>(file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment
        .merge(Env::prefixed(&format!("{env_prefix}_")).split("__"))
        .extract()
        .map_err(|e| ConfigError(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        port: u16,
    }

    #[test]
    fn file_overrides_defaults_and_unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("sy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "port = 8080\n").unwrap();
        let cfg: Sample = load_config(Some(&good), "SY_TEST_NONE").unwrap();
        assert_eq!(
            cfg,
            Sample {
                name: String::new(),
                port: 8080
            }
        );

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "prot = 1\n").unwrap();
        let err = load_config::<Sample>(Some(&bad), "SY_TEST_NONE").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }
}
