//! Certificates for a fault lab with TLS on, made with the `openssl` CLI:
//! a cluster CA, one certificate for the nodes (their lab addresses as IP
//! SANs), one for the harness's own client, and one for the sidecars limited
//! to the app's namespace (`<namespace>.namespaces.raftcron.dev`, see
//! `node/src/attach/auth.rs`).
//!
//! Why TLS: without TLS or Kubernetes a node accepts attachments from
//! loopback peers only, and in the lab every sidecar is on a host of its own.
//! Why the CLI rather than rcgen (an e2e dev-dependency): the harness already
//! drives `ip`, `tc` and `sysctl`, needs root and Linux anyway, and this keeps
//! the library's dependencies as they are; certificates from a second tool
//! also check that the nodes take what an operator's own PKI issues.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files of one leaf: (certificate, key).
pub type Leaf = (PathBuf, PathBuf);

pub struct Pki {
    pub ca: PathBuf,
    pub node: Leaf,
    pub client: Leaf,
    pub sidecar: Leaf,
}

fn openssl(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!(
                "openssl {}: {e} (the TLS fault lab needs the openssl CLI)",
                args[0]
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn key(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let file = format!("{name}.key");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &file,
        ],
        dir,
    )?;
    Ok(dir.join(file))
}

/// A leaf signed by the CA in `dir`, usable as server and client
/// certificate, with `sans` (`IP:…`, `DNS:…`).
fn leaf(dir: &Path, name: &str, sans: &[String]) -> Result<Leaf, String> {
    let key = key(dir, name)?;
    let cnf = format!("{name}.cnf");
    std::fs::write(
        dir.join(&cnf),
        format!(
            "[req]\ndistinguished_name = dn\n[dn]\n[leaf]\n\
             basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth,clientAuth\n\
             authorityKeyIdentifier = keyid\n\
             subjectAltName = {}\n",
            sans.join(",")
        ),
    )
    .map_err(|e| format!("{cnf}: {e}"))?;
    let (csr, pem) = (format!("{name}.csr"), format!("{name}.pem"));
    let subject = format!("/CN={name}");
    let key_file = key.display().to_string();
    openssl(
        &[
            "req", "-new", "-config", &cnf, "-key", &key_file, "-subj", &subject, "-out", &csr,
        ],
        dir,
    )?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "7",
            "-extfile",
            &cnf,
            "-extensions",
            "leaf",
            "-out",
            &pem,
        ],
        dir,
    )?;
    Ok((dir.join(pem), key))
}

/// Makes the lab's certificates in `dir`: nodes at `node_ips`, sidecars
/// of `namespace`.
pub fn make(dir: &Path, node_ips: &[String], namespace: &str) -> Result<Pki, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    key(dir, "ca")?;
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\n[dn]\n[ca]\n\
         basicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .map_err(|e| format!("ca.cnf: {e}"))?;
    openssl(
        &[
            "req",
            "-new",
            "-x509",
            "-config",
            "ca.cnf",
            "-extensions",
            "ca",
            "-key",
            "ca.key",
            "-subj",
            "/CN=raftcron chaos CA",
            "-days",
            "7",
            "-out",
            "ca.pem",
        ],
        dir,
    )?;
    let mut node_sans: Vec<String> = node_ips.iter().map(|ip| format!("IP:{ip}")).collect();
    node_sans.push("IP:127.0.0.1".into());
    let node = leaf(dir, "node", &node_sans)?;
    let client = leaf(dir, "client", &["DNS:chaos-client".to_string()])?;
    let sidecar = leaf(
        dir,
        "sidecar",
        &[format!("DNS:{namespace}.namespaces.raftcron.dev")],
    )?;
    Ok(Pki {
        ca: dir.join("ca.pem"),
        node,
        client,
        sidecar,
    })
}
