//! Validated backend MCP servers (servers.d) and profiles: what to connect to, how to
//! authenticate, which tools to offer, and which subsets each profile serves.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

use super::{Secret, Status, is_name, positive_duration, valid_env_name};
use crate::config::{ConfigError, Parsed, RawAuth, RawBackend, RawProfile, SourceFile};

pub const DEFAULT_BACKEND_TIMEOUT_S: f64 = 30.0;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    Http {
        url: String,
    },
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub prefix: String,
    pub transport: Transport,
    /// The header to send and its value (already `Bearer …` for bearer auth).
    pub auth: Option<(HeaderName, Secret)>,
    /// How the backend authenticates, declared even while its variable is unset: a
    /// session's credential is sent in this shape.
    pub auth_shape: Option<AuthShape>,
    pub env_key: Option<String>,
    /// `enabled = false`: not even a session's credential connects it.
    pub disabled: bool,
    pub timeout: Duration,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub status: Status,
    /// Changes when anything that needs a new connection changes.
    pub fingerprint: u64,
}

/// The header a backend's secret goes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthShape {
    Bearer,
    Header(HeaderName),
}

impl AuthShape {
    /// The header and value that send `secret` in this shape.
    pub fn header(&self, secret: &str) -> (HeaderName, Secret) {
        match self {
            AuthShape::Bearer => (
                reqwest::header::AUTHORIZATION,
                Secret::new(format!("Bearer {secret}")),
            ),
            AuthShape::Header(name) => (name.clone(), Secret::new(secret.to_string())),
        }
    }
}

impl Backend {
    /// Whether a backend tool passes the `include` / `exclude` globs.
    pub fn wants(&self, tool: &str) -> bool {
        let matches = |globs: &[String]| {
            globs
                .iter()
                .any(|g| wildmatch::WildMatch::new(g).matches(tool))
        };
        (self.include.is_empty() || matches(&self.include)) && !matches(&self.exclude)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub servers: Vec<String>,
    pub tools: Vec<String>,
}

impl Profile {
    /// Whether a tool (from `server`, if a backend's) belongs to this profile.
    pub fn allows(&self, server: Option<&str>, tool: &str) -> bool {
        let matches = |globs: &[String], name: &str| {
            globs
                .iter()
                .any(|g| wildmatch::WildMatch::new(g).matches(name))
        };
        server.is_some_and(|s| matches(&self.servers, s)) || matches(&self.tools, tool)
    }
}

pub fn build_profiles(
    profiles: &BTreeMap<String, RawProfile>,
    src: &SourceFile,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Profile> {
    let mut out = BTreeMap::new();
    for (name, raw) in profiles {
        if !is_name(name, 64) {
            errors.push(src.error_at(&["profiles", name], format!("profile name `{name}` must use only a-z, A-Z, 0-9, '_' and '-' (it is a URL path segment)")));
            continue;
        }
        if raw.servers.is_empty() && raw.tools.is_empty() {
            errors.push(src.error_at(
                &["profiles", name],
                "expected `servers` or `tools` globs; an empty profile serves nothing",
            ));
            continue;
        }
        out.insert(
            name.clone(),
            Profile {
                servers: raw.servers.clone(),
                tools: raw.tools.clone(),
            },
        );
    }
    out
}

pub fn build_backend(
    parsed: &Parsed<RawBackend>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Backend> {
    let raw = &parsed.raw;
    let src = &parsed.source;
    let before = errors.len();
    let name = parsed.name.clone();
    let transport = match (&raw.url, &raw.command) {
        (Some(url), None) => match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Some(Transport::Http { url: url.clone() })
            }
            _ => {
                errors.push(src.error_at(
                    &["url"],
                    format!("expected an http or https URL, found \"{url}\""),
                ));
                None
            }
        },
        (None, Some(command)) if !command.trim().is_empty() => Some(Transport::Stdio {
            command: command.clone(),
            args: raw.args.clone(),
            env: raw.env.clone(),
        }),
        (Some(_), Some(_)) => {
            errors.push(src.error_at(&["command"], "expected `url` or `command`, not both"));
            None
        }
        _ => {
            errors.push(src.error_at(
                &[],
                "missing key: expected `url` (streamable HTTP) or `command` (stdio)",
            ));
            None
        }
    };
    if raw.url.is_some() && (!raw.args.is_empty() || !raw.env.is_empty()) {
        errors.push(src.error_at(&["args"], "`args` and `env` are for `command` backends"));
    }
    let prefix = raw.prefix.clone().unwrap_or_else(|| name.clone());
    if !is_name(&prefix, 32) {
        let key: &[&str] = if raw.prefix.is_some() {
            &["prefix"]
        } else {
            &[]
        };
        errors.push(src.error_at(key, format!("prefix `{prefix}` must be 1 to 32 of a-z, A-Z, 0-9, '_' and '-' (set `prefix` when the file name is not)")));
    }
    let timeout = positive_duration(
        src,
        &["timeout_s"],
        raw.timeout_s.unwrap_or(DEFAULT_BACKEND_TIMEOUT_S),
        errors,
    );
    let mut status = Status::Active;
    let (auth, env_key, missing) = match &raw.auth {
        Some(a) => build_auth(src, a, lookup, errors),
        None => (None, None, None),
    };
    if let Some(why) = missing {
        status = Status::Inactive(why);
    }
    if raw.enabled == Some(false) {
        status = Status::Inactive("disabled by `enabled = false`".to_string());
    }
    if errors.len() > before {
        return None;
    }
    let transport = transport?;
    let auth_shape = raw.auth.as_ref().and_then(|a| match a {
        RawAuth::Bearer { .. } => Some(AuthShape::Bearer),
        RawAuth::Header { name, .. } => HeaderName::try_from(name.as_str())
            .ok()
            .map(AuthShape::Header),
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    transport.hash(&mut h);
    auth.as_ref()
        .map(|(n, v)| (n.as_str().to_string(), v.expose().to_string()))
        .hash(&mut h);
    Some(Backend {
        name,
        prefix,
        transport,
        auth,
        auth_shape,
        env_key,
        disabled: raw.enabled == Some(false),
        timeout,
        include: raw.include.clone(),
        exclude: raw.exclude.clone(),
        status,
        fingerprint: h.finish(),
    })
}

/// An `auth = { type = "bearer" | "header", … }` table: the header to send with its value
/// from the environment, the variable's name, and why it is unusable when it is unset.
pub(crate) fn build_auth(
    src: &SourceFile,
    raw: &RawAuth,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> (Option<(HeaderName, Secret)>, Option<String>, Option<String>) {
    let (header, key, bearer) = match raw {
        RawAuth::Bearer { env_key } => ("authorization".to_string(), env_key.clone(), true),
        RawAuth::Header { name, env_key } => (name.clone(), env_key.clone(), false),
    };
    match HeaderName::try_from(header.as_str()) {
        Ok(h) if valid_env_name(&key) => match lookup(&key) {
            Some(value) => {
                let value = if bearer {
                    format!("Bearer {value}")
                } else {
                    value
                };
                if HeaderValue::try_from(value.as_str()).is_err() {
                    errors.push(src.error_at(
                        &["auth", "env_key"],
                        format!("the value of {key} cannot be sent in an HTTP header"),
                    ));
                }
                (Some((h, Secret::new(value))), Some(key), None)
            }
            None => (None, Some(key.clone()), Some(format!("{key} is not set"))),
        },
        Ok(_) => {
            errors.push(src.error_at(
                &["auth", "env_key"],
                format!("expected an environment variable name, found \"{key}\""),
            ));
            (None, None, None)
        }
        Err(_) => {
            errors.push(src.error_at(
                &["auth", "name"],
                format!("`{header}` is not a valid HTTP header name"),
            ));
            (None, None, None)
        }
    }
}
