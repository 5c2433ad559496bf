//! Pure: the webhook's own CA and serving certificate, and when to renew
//! them. The time is an argument; no client.
//!
//! ```text
//!  Secret data (ca.crt bundle, ca.key, tls.crt, tls.key) + now ──plan()──► Keep { next check }
//!                                                                     └──► Write { new data, why }
//! ```
//!
//! Each certificate is renewed at 2/3 of its life (CA 5 years, leaf 90
//! days). A new CA joins the bundle (`ca.crt`, which becomes the webhook
//! configuration's `caBundle`) beside the old one, which stays until it
//! expires; the leaf is re-issued by the new CA at its own renewal. The
//! caller patches the webhook configuration with a new bundle before it
//! writes the Secret, so the API server trusts every leaf a replica
//! serves (rotate.rs). A leaf signed
//! by a CA outside the bundle, for other names or with a key that does not
//! match is replaced at once.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

const DAY: i64 = 86_400;
/// Certificates start an hour back: clocks in a cluster disagree.
const SKEW: i64 = 3_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca_seconds: i64,
    pub leaf_seconds: i64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            ca_seconds: 5 * 365 * DAY,
            leaf_seconds: 90 * DAY,
        }
    }
}

/// The Secret's four PEM values (empty when missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// Every CA the API server should trust, newest first.
    pub ca_bundle: String,
    /// The key of the newest CA: the one that signs new leaves.
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

impl Material {
    pub fn from_secret(data: Option<&BTreeMap<String, ByteString>>) -> Self {
        let get = |k: &str| {
            data.and_then(|d| d.get(k))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        };
        Self {
            ca_bundle: get(CA_CRT),
            ca_key: get(CA_KEY),
            cert: get(TLS_CRT),
            key: get(TLS_KEY),
        }
    }

    pub fn to_secret(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_CRT, &self.ca_bundle),
            (CA_KEY, &self.ca_key),
            (TLS_CRT, &self.cert),
            (TLS_KEY, &self.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("making a certificate: {0}")]
pub struct CertError(#[from] rcgen::Error);

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Keep,
    Write {
        material: Material,
        /// What was wrong or due, for the log.
        why: Vec<&'static str>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub step: Step,
    /// When the (new) material next needs a look, Unix seconds.
    pub next_check: i64,
}

/// The names the API server may call the webhook Service by; it checks
/// `<service>.<namespace>.svc`.
pub fn sans(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// One certificate of a PEM text, with what the plan looks at.
struct Cert {
    pem: String,
    der: Vec<u8>,
    not_before: i64,
    not_after: i64,
    public_key: Vec<u8>,
    is_ca: bool,
    /// DNS names and IP addresses, as text.
    dns_names: Vec<String>,
}

fn ip_text(octets: &[u8]) -> Option<String> {
    match octets.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?).to_string()),
        _ => None,
    }
}

impl Cert {
    /// When it is due for renewal: 2/3 of the way through its life.
    fn renew_at(&self) -> i64 {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }

    fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }

    fn signed_by(&self, ca: &Cert) -> bool {
        let (Ok((_, leaf)), Ok((_, ca))) = (
            x509_parser::parse_x509_certificate(&self.der),
            x509_parser::parse_x509_certificate(&ca.der),
        ) else {
            return false;
        };
        leaf.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// Every certificate in a PEM text that parses; anything else is ignored.
fn certs(pem: &str) -> Vec<Cert> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(begin) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[begin..].find(END) else {
            break;
        };
        let block = format!("{}\n", &rest[begin..begin + end + END.len()]);
        rest = &rest[begin + end + END.len()..];
        let Ok((_, p)) = x509_parser::pem::parse_x509_pem(block.as_bytes()) else {
            continue;
        };
        let Ok(x) = p.parse_x509() else { continue };
        let dns_names = x
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Cert {
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            public_key: x.public_key().subject_public_key.data.to_vec(),
            is_ca: x.is_ca(),
            dns_names,
            der: p.contents.clone(),
            pem: block,
        });
    }
    out
}

fn public_key(key_pem: &str) -> Option<Vec<u8>> {
    KeyPair::from_pem(key_pem)
        .ok()
        .map(|k| k.public_key_raw().to_vec())
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn new_ca(now: i64, life: &Lifetimes) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    // A distinct name per CA, so an old and a new one in the bundle are
    // told apart by name as well as by key.
    p.distinguished_name
        .push(DnType::CommonName, format!("raftcron webhook CA {now}"));
    p.distinguished_name
        .push(DnType::OrganizationName, "raftcron");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = at(now - SKEW);
    p.not_after = at(now + life.ca_seconds);
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn new_leaf(
    now: i64,
    life: &Lifetimes,
    sans: &[String],
    ca_pem: &str,
    ca_key: &str,
    ca_not_after: i64,
) -> Result<(String, String), CertError> {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, KeyPair::from_pem(ca_key)?)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(sans.to_vec())?;
    p.distinguished_name.push(
        DnType::CommonName,
        sans.first().cloned().unwrap_or_default(),
    );
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    p.not_before = at(now - SKEW);
    p.not_after = at((now + life.leaf_seconds).min(ca_not_after));
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What to do with the current material at `now` (Unix seconds).
pub fn plan(
    now: i64,
    current: &Material,
    sans: &[String],
    life: &Lifetimes,
) -> Result<Decision, CertError> {
    let mut why = Vec::new();
    let bundle = certs(&current.ca_bundle);
    let before = bundle.len();
    let mut cas: Vec<Cert> = bundle
        .into_iter()
        .filter(|c| c.is_ca && c.not_after > now)
        .collect();
    if cas.len() < before {
        why.push("an expired or unusable CA left the bundle");
    }
    let mut ca_key = current.ca_key.clone();
    let signer = public_key(&ca_key).and_then(|k| cas.iter().position(|c| c.public_key == k));
    match signer {
        Some(i) if now < cas[i].renew_at() && cas[i].valid_at(now) => {
            // The signer goes first in the bundle.
            let c = cas.remove(i);
            cas.insert(0, c);
        }
        found => {
            why.push(match found {
                Some(_) => "the CA is two thirds through its life",
                None if cas.is_empty() => "there is no CA",
                None => "no CA in the bundle has the stored key",
            });
            let (pem, key) = new_ca(now, life)?;
            let mut made = certs(&pem);
            cas.insert(0, made.remove(0));
            ca_key = key;
        }
    }

    let leaf = certs(&current.cert).into_iter().next();
    let mut wanted: Vec<&String> = sans.iter().collect();
    wanted.sort();
    let usable = leaf.as_ref().is_some_and(|l| {
        let mut names: Vec<&String> = l.dns_names.iter().collect();
        names.sort();
        l.valid_at(now)
            && names == wanted
            && public_key(&current.key).is_some_and(|k| k == l.public_key)
            && cas.iter().any(|ca| l.signed_by(ca))
    });
    let (mut cert, mut key) = (current.cert.clone(), current.key.clone());
    let due = leaf.as_ref().is_some_and(|l| now >= l.renew_at());
    if !usable || due {
        why.push(if !usable {
            "the serving certificate is missing, expired, for other names or not from a CA in the bundle"
        } else {
            "the serving certificate is two thirds through its life"
        });
        (cert, key) = new_leaf(now, life, sans, &cas[0].pem, &ca_key, cas[0].not_after)?;
    }

    let material = Material {
        ca_bundle: cas.iter().map(|c| c.pem.as_str()).collect(),
        ca_key,
        cert,
        key,
    };
    let next_check = next_check(now, &material);
    let step = if why.is_empty() && material == *current {
        Step::Keep
    } else {
        Step::Write { material, why }
    };
    Ok(Decision { step, next_check })
}

/// The earliest of: the signer's and the leaf's renewal, and the expiry of
/// any other CA in the bundle (it leaves then).
fn next_check(now: i64, m: &Material) -> i64 {
    let cas = certs(&m.ca_bundle);
    let mut at = i64::MAX;
    if let Some(signer) = cas.first() {
        at = at.min(signer.renew_at());
    }
    for other in cas.iter().skip(1) {
        at = at.min(other.not_after);
    }
    if let Some(leaf) = certs(&m.cert).first() {
        at = at.min(leaf.renew_at());
    }
    at.max(now)
}

/// `bundle` and then every unexpired CA of `other` it lacks: what the API
/// server trusts while replicas move from a leaf of `other` to one of `bundle`.
pub fn merge_bundles(now: i64, bundle: &str, other: &str) -> String {
    let mut out: Vec<Cert> = certs(bundle);
    for c in certs(other) {
        if c.is_ca && c.not_after > now && !out.iter().any(|o| o.der == c.der) {
            out.push(c);
        }
    }
    out.iter().map(|c| c.pem.as_str()).collect()
}

/// When the first certificate of a PEM text expires, Unix seconds.
pub fn not_after(pem: &str) -> Option<i64> {
    certs(pem).first().map(|c| c.not_after)
}

#[cfg(test)]
mod tests;
