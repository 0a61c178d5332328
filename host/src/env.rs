//! Configuration from the environment: the `CACHE_*` variables, `.env`, and the size and TTL
//! syntax they share with `pcache`'s flags.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::expiry::parse_duration;
use crate::options::CacheOptions;

/// Environment variable naming the cache directory.
pub const ENV_DIRECTORY: &str = "CACHE_DIRECTORY";
/// Environment variable holding the size limit (bytes, or with a unit: `500MB`).
pub const ENV_SIZE_LIMIT: &str = "CACHE_SIZE_LIMIT";
/// Environment variable holding the default entry TTL (seconds or `5m`; 0 = entries never expire).
pub const ENV_CONTENT_TTL: &str = "CACHE_CONTENT_TTL";
/// Environment variable holding the search-result TTL (seconds or `5m`; 0 = none).
pub const ENV_SEARCH_TTL: &str = "CACHE_SEARCH_TTL";
/// Environment variable naming the shared Redis tier (`redis://host:port`, `redis+unix:///path`):
/// read from the real environment only, never from `.env` (see SECURITY.md).
pub const ENV_REDIS_URL: &str = "CACHE_REDIS_URL";

impl CacheOptions {
    /// Reads the environment, and `.env` in the working directory (if present) for variables
    /// the environment does not set.
    ///
    /// Variables: `CACHE_DIRECTORY`, `CACHE_SIZE_LIMIT` (bytes, or with a unit: `500MB`,
    /// `1GiB`), `CACHE_CONTENT_TTL` and `CACHE_SEARCH_TTL` (seconds, or a duration: `300s`,
    /// `5m`, `1h 30m`; 0 = none), and `CACHE_REDIS_URL` (the shared Redis tier,
    /// [`CacheOptions::redis`]) — that one from the real environment only: a `.env` naming it is
    /// ignored with a warning, so an untrusted checkout cannot send the cache's data to a server
    /// of its choosing. Real environment variables win over `.env`. Unset or empty
    /// variables keep their defaults; an option set from a variable counts as set.
    ///
    /// `.env` is only read: the process environment is never changed (setting variables in a
    /// multi-threaded program is undefined behaviour on glibc), and nothing else in `.env` has
    /// any effect — in particular it cannot move the code cache (`XDG_CACHE_HOME`) or any
    /// other setting read from the real environment.
    ///
    /// # Errors
    /// [`Error::Config`] if `.env` exists but cannot be read or parsed, or if a variable's
    /// value is malformed (the error names the variable and the value).
    pub fn from_env() -> Result<CacheOptions> {
        CacheOptions::from_vars(env_lookup()?)
    }

    /// Builds options from the variables `lookup` returns, starting from the defaults.
    ///
    /// Same variables and rules as [`CacheOptions::from_env`], without touching the process
    /// environment or `.env`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable and its value when a value does not parse or the
    /// size limit is zero.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<CacheOptions> {
        let mut options = CacheOptions::default();
        for variable in [
            ENV_DIRECTORY,
            ENV_SIZE_LIMIT,
            ENV_CONTENT_TTL,
            ENV_SEARCH_TTL,
            ENV_REDIS_URL,
        ] {
            if let Some(value) = lookup(variable) {
                options = options.with_var(variable, &value)?;
            }
        }
        Ok(options)
    }

    /// Applies one configuration variable's `value` (trimmed; empty leaves the option alone).
    ///
    /// This is how `pcache` lets a flag win over a malformed variable: it applies only the
    /// variables whose flag was not given.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable and its value when the value does not parse, the
    /// size limit is zero, or `variable` is not one of the `CACHE_*` variables.
    pub fn with_var(self, variable: &str, value: &str) -> Result<CacheOptions> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(self);
        }
        let config_error = |message: String| Error::Config {
            variable: variable.to_owned(),
            message,
        };
        Ok(match variable {
            ENV_DIRECTORY => self.directory(value),
            ENV_SIZE_LIMIT => self.size_limit(parse_size(value).map_err(config_error)?),
            ENV_CONTENT_TTL => self.default_ttl(Some(parse_duration(value).map_err(config_error)?)),
            ENV_SEARCH_TTL => self.search_ttl(Some(parse_duration(value).map_err(config_error)?)),
            ENV_REDIS_URL => self.redis(value),
            _ => {
                return Err(config_error(format!(
                    "not a configuration variable (value {value:?})"
                )))
            }
        })
    }
}

/// The `CACHE_*` variables as [`CacheOptions::from_env`] reads them: the environment first,
/// then `.env` in the working directory — except `CACHE_REDIS_URL`, taken from the environment
/// only (a `.env` naming it gets a warning and is not followed).
///
/// # Errors
/// [`Error::Config`] if `.env` exists but cannot be read or parsed.
pub fn env_lookup() -> Result<impl Fn(&str) -> Option<String>> {
    let mut dotenv = read_dotenv(Path::new(".env"))?;
    if dotenv.remove(ENV_REDIS_URL).is_some() {
        tracing::warn!(
            "{ENV_REDIS_URL} in .env is ignored: the Redis tier is named by the real environment \
             or a flag only (an untrusted checkout must not choose where the cache's data goes)"
        );
    }
    Ok(move |name: &str| {
        std::env::var_os(name)
            .map(|value| value.to_string_lossy().into_owned())
            .or_else(|| dotenv.get(name).cloned())
    })
}

/// Parses a size as `--size-limit` and `CACHE_SIZE_LIMIT` take it: bytes (`1048576`) or with a
/// unit (`500MB`, `1GiB`, `64 KiB`; units are binary: `500MB` is 500 MiB).
///
/// Edge cases: zero is refused (a cache that can hold nothing); a malformed size is refused,
/// quoting it.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let size = parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|err| {
            format!("expected bytes or a size like 500MB or 1GiB, got {text:?}: {err}")
        })?;
    if size == 0 {
        return Err(format!(
            "the size limit must be more than 0 bytes, got {text:?}"
        ));
    }
    Ok(size)
}

/// The variables in the dotenv file at `path` (empty if there is none), without applying them.
fn read_dotenv(path: &Path) -> Result<HashMap<String, String>> {
    let config_error = |err: dotenvy::Error| Error::Config {
        variable: ".env".to_owned(),
        message: format!("cannot load .env: {err}"),
    };
    let entries = match dotenvy::from_path_iter(path) {
        Ok(entries) => entries,
        Err(err) if err.not_found() => return Ok(HashMap::new()),
        Err(err) => return Err(config_error(err)),
    };
    entries.map(|entry| entry.map_err(config_error)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{DEFAULT_DIRECTORY, DEFAULT_SIZE_LIMIT, DEFAULT_TIME_LIMIT};
    use std::time::Duration;

    fn options_from(pairs: &[(&str, &str)]) -> Result<CacheOptions> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CacheOptions::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_variables_gives_defaults() {
        let options = options_from(&[]).expect("defaults parse");
        assert_eq!(options.directory_path(), Path::new("tmp/cache"));
        assert_eq!(options.size_limit_value(), 524_288_000);
        assert_eq!(options.size_limit_setting(), None, "left at its default");
        assert_eq!(options.default_ttl_value(), None);
        assert_eq!(options.search_ttl_value(), None);
        assert!(!options.sync_value());
        assert!(!options.read_only_value());
        assert_eq!(options.time_limit_value(), DEFAULT_TIME_LIMIT);
    }

    #[test]
    fn all_variables_are_read() {
        let options = options_from(&[
            ("CACHE_DIRECTORY", "/var/cache/app"),
            ("CACHE_SIZE_LIMIT", "1048576"),
            ("CACHE_CONTENT_TTL", "3600"),
            ("CACHE_SEARCH_TTL", " 60 "),
        ])
        .expect("valid variables parse");
        assert_eq!(options.directory_path(), Path::new("/var/cache/app"));
        assert_eq!(options.size_limit_setting(), Some(1_048_576));
        assert_eq!(options.default_ttl_value(), Some(Duration::from_secs(3600)));
        assert_eq!(options.search_ttl_value(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn variables_parse_like_the_flags() {
        let options = options_from(&[
            ("CACHE_SIZE_LIMIT", "500MB"),
            ("CACHE_CONTENT_TTL", "5m"),
            ("CACHE_SEARCH_TTL", "300s"),
        ])
        .expect("units parse");
        // Units are binary, as for --size-limit: 500MB is 500 MiB.
        assert_eq!(options.size_limit_value(), 500 << 20);
        assert_eq!(options.default_ttl_value(), Some(Duration::from_secs(300)));
        assert_eq!(options.search_ttl_value(), Some(Duration::from_secs(300)));
        let binary = options_from(&[
            ("CACHE_SIZE_LIMIT", "1GiB"),
            ("CACHE_CONTENT_TTL", "1h 30m"),
        ])
        .expect("binary units and compound durations parse");
        assert_eq!(binary.size_limit_value(), 1 << 30);
        assert_eq!(binary.default_ttl_value(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_size("500MB"), parse_size(" 500 MB "));
    }

    #[test]
    fn zero_ttl_means_none_and_empty_means_unset() {
        let options = options_from(&[
            ("CACHE_CONTENT_TTL", "0"),
            ("CACHE_SEARCH_TTL", "0"),
            ("CACHE_DIRECTORY", ""),
            ("CACHE_SIZE_LIMIT", "  "),
        ])
        .expect("zero TTLs parse");
        assert_eq!(options.default_ttl_value(), None);
        assert_eq!(options.search_ttl_value(), None);
        assert_eq!(options.directory_path(), Path::new(DEFAULT_DIRECTORY));
        assert_eq!(options.size_limit_value(), DEFAULT_SIZE_LIMIT);
    }

    #[test]
    fn malformed_values_name_variable_and_value() {
        for (variable, value) in [
            ("CACHE_SIZE_LIMIT", "500 bananas"),
            ("CACHE_SIZE_LIMIT", "-1"),
            ("CACHE_SIZE_LIMIT", "0"),
            ("CACHE_CONTENT_TTL", "1.5"),
            ("CACHE_SEARCH_TTL", "soon"),
        ] {
            match options_from(&[(variable, value)]) {
                Err(Error::Config {
                    variable: named,
                    message,
                }) => {
                    assert_eq!(named, variable);
                    assert!(
                        message.contains(value),
                        "{message:?} should quote {value:?}"
                    );
                }
                other => panic!("{variable}={value} gave {other:?}"),
            }
        }
    }

    #[test]
    fn dotenv_is_read_without_touching_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "CACHE_SIZE_LIMIT=4096\nXDG_CACHE_HOME=./evil\nPCACHE_TEST_DOTENV_ONLY=1\n",
        )
        .unwrap();
        let vars = read_dotenv(&path).unwrap();
        assert_eq!(
            vars.get("CACHE_SIZE_LIMIT").map(String::as_str),
            Some("4096")
        );
        assert_eq!(std::env::var_os("PCACHE_TEST_DOTENV_ONLY"), None);
        assert!(read_dotenv(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(&path, "NOT A LINE\n").unwrap();
        assert!(matches!(read_dotenv(&path), Err(Error::Config { .. })));
    }
}
