//! How each kind of setting reads its text (from a flag, the environment or the file) and shows
//! itself in `pier config`. One parser per type, so a value means the same from every source.

use std::net::SocketAddr;
use std::path::PathBuf;

use pier_auth::KeySecret;
use pier_core::{MasterKey, Secret, SecretUrl};
use pier_db::DatabaseUrl;
use pier_ratelimit::PolicySpec;
use serde::Serialize;

/// A type a setting can have.
pub trait SettingValue: Sized {
    /// Reads the text of a flag, an environment variable or a file value.
    fn parse(text: &str) -> Result<Self, String>;
    /// The value for `pier config`, secrets redacted; `None` when unset.
    fn show(&self) -> Option<toml::Value>;
}

/// The largest whole number a setting takes: far beyond any sensible count, size or duration
/// (some 31,000 years in seconds, a terabyte in bytes), and small enough that the arithmetic
/// made with it (a deadline, a semaphore's permits, seconds in milliseconds) cannot overflow
/// and stop the node after it started.
const MOST: u64 = 1_000_000_000_000;

/// Reads a whole number up to [`MOST`].
fn whole(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n > MOST => Err(format!("must be at most {MOST}")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

impl SettingValue for u64 {
    fn parse(text: &str) -> Result<Self, String> {
        match whole(text)? {
            0 => Err("must be greater than zero".to_owned()),
            n => Ok(n),
        }
    }

    fn show(&self) -> Option<toml::Value> {
        Some(i64::try_from(*self).map_or_else(|_| self.to_string().into(), toml::Value::from))
    }
}

/// A whole number that may be zero, for the few settings where zero means "none" (most counts
/// and durations must be positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroOrMore(pub u64);

impl SettingValue for ZeroOrMore {
    fn parse(text: &str) -> Result<Self, String> {
        whole(text).map(Self)
    }

    fn show(&self) -> Option<toml::Value> {
        self.0.show()
    }
}

impl SettingValue for SocketAddr {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP:port address"))
    }

    fn show(&self) -> Option<toml::Value> {
        Some(self.to_string().into())
    }
}

impl SettingValue for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            Err("must not be empty".to_owned())
        } else {
            Ok(PathBuf::from(text))
        }
    }

    fn show(&self) -> Option<toml::Value> {
        Some(self.display().to_string().into())
    }
}

impl SettingValue for DatabaseUrl {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|e: pier_db::InvalidDatabaseUrl| e.to_string())
    }

    fn show(&self) -> Option<toml::Value> {
        Some(self.redacted().into())
    }
}

impl SettingValue for SecretUrl {
    fn parse(text: &str) -> Result<Self, String> {
        let url = SecretUrl::new(text);
        match redis::Client::open(url.expose()) {
            Ok(_) => Ok(url),
            Err(_) => Err(format!("`{url}` is not a usable Redis URL")),
        }
    }

    fn show(&self) -> Option<toml::Value> {
        Some(self.redacted().into())
    }
}

impl SettingValue for Secret<KeySecret> {
    fn parse(text: &str) -> Result<Self, String> {
        KeySecret::parse(text.trim())
            .map(Secret::new)
            .map_err(|_| "not a valid Pier key; make one with `pier keys generate`".to_owned())
    }

    fn show(&self) -> Option<toml::Value> {
        Some("[redacted]".into())
    }
}

impl SettingValue for Secret<MasterKey> {
    fn parse(text: &str) -> Result<Self, String> {
        MasterKey::parse(text).map(Secret::new)
    }

    fn show(&self) -> Option<toml::Value> {
        Some("[redacted]".into())
    }
}

impl<T: SettingValue> SettingValue for Option<T> {
    /// Empty text (e.g. `PIER_REDIS_URL=`) leaves the setting unset.
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            Ok(None)
        } else {
            T::parse(text).map(Some)
        }
    }

    fn show(&self) -> Option<toml::Value> {
        self.as_ref().and_then(T::show)
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, human-readable when it is.
    Auto,
    Json,
    Pretty,
}

impl SettingValue for LogFormat {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("`{other}` is not one of auto, json, pretty")),
        }
    }

    fn show(&self) -> Option<toml::Value> {
        toml::Value::try_from(self).ok()
    }
}

/// What a node runs: the API, the background work (webhook deliveries, job upkeep,
/// maintenance), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    All,
    /// The HTTP API only; other nodes do the background work.
    Api,
    /// The background work only, with the admin listener (metrics and probes) but no API.
    Worker,
}

impl Role {
    pub fn serves_api(self) -> bool {
        self != Self::Worker
    }

    pub fn runs_background_work(self) -> bool {
        self != Self::Api
    }
}

impl SettingValue for Role {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "all" => Ok(Self::All),
            "api" => Ok(Self::Api),
            "worker" => Ok(Self::Worker),
            other => Err(format!("`{other}` is not one of all, api, worker")),
        }
    }

    fn show(&self) -> Option<toml::Value> {
        toml::Value::try_from(self).ok()
    }
}

/// A `tracing` filter such as `info` or `pier=debug,sqlx=warn`, checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(pub String);

impl SettingValue for LogFilter {
    fn parse(text: &str) -> Result<Self, String> {
        tracing_subscriber::EnvFilter::try_new(text)
            .map(|_| Self(text.to_owned()))
            .map_err(|e| e.to_string())
    }

    fn show(&self) -> Option<toml::Value> {
        Some(self.0.clone().into())
    }
}

impl SettingValue for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            other => Err(format!("`{other}` is not true or false")),
        }
    }

    fn show(&self) -> Option<toml::Value> {
        Some((*self).into())
    }
}

impl SettingValue for PolicySpec {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|e: pier_ratelimit::SpecError| e.to_string())
    }

    fn show(&self) -> Option<toml::Value> {
        Some(self.to_string().into())
    }
}

/// Addresses and CIDR blocks, separated by commas or spaces: `10.0.0.0/8, 192.0.2.7`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyList(pub Vec<ipnet::IpNet>);

impl SettingValue for ProxyList {
    fn parse(text: &str) -> Result<Self, String> {
        text.split([',', ' '])
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<ipnet::IpNet>()
                    .or_else(|_| part.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{part}` is not an IP address or CIDR block"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn show(&self) -> Option<toml::Value> {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        Some(list.join(", ").into())
    }
}

/// Browser origins (`scheme://host[:port]`), each exactly as a browser sends it in `Origin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginList(pub Vec<String>);

impl SettingValue for OriginList {
    fn parse(text: &str) -> Result<Self, String> {
        text.split([',', ' '])
            .filter(|part| !part.is_empty())
            .map(|part| {
                let refused = || {
                    format!(
                        "`{part}` is not an origin: http(s)://host[:port], with no path, \
                         query or wildcard"
                    )
                };
                let url = reqwest::Url::parse(part).map_err(|_| refused())?;
                let origin = url.origin().ascii_serialization();
                let exact = matches!(url.scheme(), "http" | "https")
                    && url.username().is_empty()
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && !part.contains('*')
                    && part.trim_end_matches('/').eq_ignore_ascii_case(&origin);
                exact.then_some(origin).ok_or_else(refused)
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn show(&self) -> Option<toml::Value> {
        (!self.0.is_empty()).then(|| self.0.join(", ").into())
    }
}

/// The base of short URLs: an absolute `http` or `https` URL without credentials, query or
/// fragment, kept without its trailing `/` so a slug is appended with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(pub String);

impl SettingValue for BaseUrl {
    fn parse(text: &str) -> Result<Self, String> {
        let url = pier_links::Target::parse(text.trim()).map_err(|e| format!("the URL {e}"))?;
        let text = url.as_str();
        if text.contains(['?', '#']) {
            return Err("must not have a query or fragment".to_owned());
        }
        Ok(Self(text.trim_end_matches('/').to_owned()))
    }

    fn show(&self) -> Option<toml::Value> {
        Some(self.0.clone().into())
    }
}

impl SettingValue for pier_webhooks::RetrySchedule {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }

    fn show(&self) -> Option<toml::Value> {
        Some(self.to_string().into())
    }
}
