//! Certificates for a system that runs with TLS (`imctl up --tls`, the
//! TLS tests): a private CA made for this data directory and one server
//! certificate it signs, for `localhost` and `127.0.0.1`, that nats-server
//! (clients and routes) and the gateways present. Clients trust the CA
//! (`IM_NATS_CA`, or a browser told to). Made once; kept in
//! `<data-dir>/credentials/tls/`, keys mode 0600.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Where a data directory's TLS files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server certificate (PEM) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials").join("tls")
}

/// The CA to trust for the system last started on this data directory,
/// if it runs with TLS (its node config includes the TLS block).
pub fn ca_in_use(data_dir: &Path) -> Option<PathBuf> {
    let with_tls = ["nats.conf", "nats-cluster.conf"].iter().any(|conf| {
        std::fs::read_to_string(data_dir.join(conf))
            .is_ok_and(|text| text.contains("include \"nats-tls.conf\""))
    });
    let ca = TlsFiles::of(data_dir).ca;
    (with_tls && ca.exists()).then_some(ca)
}

impl TlsFiles {
    pub fn of(data_dir: &Path) -> Self {
        let dir = tls_dir(data_dir);
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        }
    }

    /// This data directory's files, made where missing.
    pub fn ensure(data_dir: &Path) -> crate::Result<Self> {
        let files = Self::of(data_dir);
        if files.ca.exists() && files.cert.exists() && files.key.exists() {
            return Ok(files);
        }
        let made = generate(&["localhost", "127.0.0.1"])?;
        std::fs::create_dir_all(tls_dir(data_dir))?;
        for path in [&files.ca, &files.cert, &files.key] {
            let _ = std::fs::remove_file(path);
        }
        std::fs::write(&files.ca, made.ca_pem)?;
        std::fs::write(&files.cert, made.cert_pem)?;
        im_runtime::secrets::create_private(&files.key, made.key_pem.as_bytes())?;
        Ok(files)
    }
}

/// A fresh CA and a server certificate it signs for `names`, as PEM.
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn generate(names: &[&str]) -> crate::Result<Generated> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "im pipeline local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut server =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    server.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("localhost"),
    );
    let cert = server.signed_by(&key, &issuer)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
