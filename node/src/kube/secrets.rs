//! Secret values for HTTP headers (`valueFrom.secretKeyRef`), read at
//! execution time from the ScheduledJob's namespace.
//!
//! ```text
//!  header valueFrom ──► KubeSecrets::resolve(ns, name, key)
//!                          │ cache hit younger than 5 s ──► value
//!                          └ miss: one GET per Secret, concurrent callers wait for it
//! ```
//!
//! A schedule firing every second, or a thousand of them sharing one
//! Secret, must not turn into a GET per fire: the whole Secret is cached for
//! [`TTL`] and concurrent misses share one request. A changed Secret is
//! therefore seen within five seconds. Values never appear in errors or logs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::kube::Api;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use tokio::sync::OnceCell;

use crate::exec::SecretResolver;

/// How long a read Secret is reused.
pub const TTL: Duration = Duration::from_secs(5);
/// Entries beyond which expired ones are swept on insert.
const SWEEP_AT: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("the value of key {key:?} in Secret {namespace}/{name} is not UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("not allowed to read Secret {namespace}/{name}: {message}")]
    Forbidden {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("cannot read Secret {namespace}/{name}: {message}")]
    Api {
        namespace: String,
        name: String,
        message: String,
    },
}

impl SecretError {
    /// Answers worth keeping for the TTL; a transient failure is retried by
    /// the next caller instead.
    fn is_cacheable(&self) -> bool {
        !matches!(self, SecretError::Api { .. })
    }
}

type Data = Arc<BTreeMap<String, Vec<u8>>>;

/// The value of `key`, as text.
pub fn lookup(data: &Data, namespace: &str, name: &str, key: &str) -> Result<String, SecretError> {
    let bytes = data.get(key).ok_or_else(|| SecretError::MissingKey {
        namespace: namespace.into(),
        name: name.into(),
        key: key.into(),
    })?;
    String::from_utf8(bytes.clone()).map_err(|_| SecretError::NotText {
        namespace: namespace.into(),
        name: name.into(),
        key: key.into(),
    })
}

struct Entry {
    read_at: Instant,
    data: OnceCell<Result<Data, SecretError>>,
}

/// Secrets through the Kubernetes API, cached per (namespace, name).
pub struct KubeSecrets {
    client: ::kube::Client,
    cache: Mutex<HashMap<(String, String), Arc<Entry>>>,
}

impl KubeSecrets {
    pub fn new(client: ::kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The entry to read through: a fresh one shared with concurrent callers,
    /// or a new one when there is none or it has expired.
    fn entry(&self, key: &(String, String), now: Instant) -> Arc<Entry> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = cache.get(key)
            && now.duration_since(e.read_at) < TTL
        {
            return e.clone();
        }
        if cache.len() >= SWEEP_AT {
            cache.retain(|_, e| now.duration_since(e.read_at) < TTL);
        }
        let e = Arc::new(Entry {
            read_at: now,
            data: OnceCell::new(),
        });
        cache.insert(key.clone(), e.clone());
        e
    }

    fn forget(&self, key: &(String, String), entry: &Arc<Entry>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.get(key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            cache.remove(key);
        }
    }

    async fn fetch(&self, namespace: &str, name: &str) -> Result<Data, SecretError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.get(name).await {
            Ok(secret) => Ok(Arc::new(
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            )),
            Err(::kube::Error::Api(s)) if s.is_not_found() => Err(SecretError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            }),
            Err(::kube::Error::Api(s)) if s.is_forbidden() => Err(SecretError::Forbidden {
                namespace: namespace.into(),
                name: name.into(),
                message: s.message.clone(),
            }),
            Err(e) => Err(SecretError::Api {
                namespace: namespace.into(),
                name: name.into(),
                message: crate::exec::job::api_message(&e),
            }),
        }
    }

    /// The Secret's data, from the cache when younger than [`TTL`].
    pub async fn data(&self, namespace: &str, name: &str) -> Result<Data, SecretError> {
        let key = (namespace.to_string(), name.to_string());
        let entry = self.entry(&key, Instant::now());
        let result = entry
            .data
            .get_or_init(|| self.fetch(namespace, name))
            .await
            .clone();
        if let Err(e) = &result
            && !e.is_cacheable()
        {
            self.forget(&key, &entry);
        }
        result
    }

    pub async fn value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<String, SecretError> {
        let data = self.data(namespace, name).await?;
        lookup(&data, namespace, name, key)
    }
}

impl SecretResolver for KubeSecrets {
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            self.value(namespace, name, key)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &[u8])]) -> Data {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn a_missing_key_names_the_secret_and_the_key_but_no_value() {
        let d = data(&[("token", b"s3cr3t-value")]);
        let err = lookup(&d, "billing", "api", "password").unwrap_err();
        let text = err.to_string();
        assert_eq!(text, "Secret billing/api has no key \"password\"");
        assert!(!text.contains("s3cr3t"));
        assert_eq!(
            lookup(&d, "billing", "api", "token").as_deref(),
            Ok("s3cr3t-value")
        );
    }

    #[test]
    fn a_binary_value_is_refused_without_showing_it() {
        let d = data(&[("blob", &[0xff, 0xfe, 0x00])]);
        let err = lookup(&d, "ns", "s", "blob").unwrap_err();
        assert!(matches!(err, SecretError::NotText { .. }), "{err}");
    }

    #[test]
    fn only_transient_failures_are_read_again_before_the_ttl() {
        let nf = SecretError::NotFound {
            namespace: "n".into(),
            name: "s".into(),
        };
        let api = SecretError::Api {
            namespace: "n".into(),
            name: "s".into(),
            message: "connection reset".into(),
        };
        assert!(nf.is_cacheable());
        assert!(!api.is_cacheable());
    }
}
