//! The server's TLS flags, named and combined as etcd 3.4 names and combines them.
//!
//! `--cert-file` and `--key-file` switch the client port to TLS (plain-text clients are then
//! refused at the handshake); `--trusted-ca-file` or `--client-cert-auth` make a client
//! certificate signed by that CA a condition of connecting, as etcd's server config does. This
//! module only reads and checks the files; it never opens a socket.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

#[derive(clap::Args)]
pub struct TlsArgs {
    /// The server's certificate (PEM); with --key-file, clients must connect over TLS.
    #[arg(long, value_name = "PATH")]
    cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// The CA (PEM) that signs client certificates; as in etcd, giving it requires one.
    #[arg(long, value_name = "PATH")]
    trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by --trusted-ca-file.
    #[arg(long)]
    client_cert_auth: bool,
}

/// A checked TLS setting for the client port.
pub struct Tls {
    pub config: ServerTlsConfig,
    cert_file: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Tls {
    /// One phrase for the start-up line.
    pub fn describe(&self) -> String {
        match &self.client_ca {
            Some(ca) => format!(
                "TLS with {}, client certificates signed by {} required",
                self.cert_file.display(),
                ca.display()
            ),
            None => format!(
                "TLS with {}, no client certificate asked",
                self.cert_file.display()
            ),
        }
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        bail!("{flag} {}: not a PEM file", path.display());
    }
    Ok(pem)
}

impl TlsArgs {
    /// None for plain text; an error names the flag that is missing, unreadable or not PEM.
    pub fn server_config(&self) -> Result<Option<Tls>> {
        let (cert_file, key_file) = match (&self.cert_file, &self.key_file) {
            (None, None) => {
                if self.trusted_ca_file.is_some() || self.client_cert_auth {
                    bail!(
                        "--trusted-ca-file and --client-cert-auth need TLS: give --cert-file and --key-file too"
                    );
                }
                return Ok(None);
            }
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                bail!("--cert-file needs --key-file (the certificate's private key)")
            }
            (None, Some(_)) => {
                bail!("--key-file needs --cert-file (the certificate it belongs to)")
            }
        };
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            // etcd would fall back to the system's CAs; faultline-store trusts only a CA named
            // here, so a client certificate is never accepted on the strength of a public CA.
            bail!("--client-cert-auth needs --trusted-ca-file (the CA that signs client certificates)");
        }
        let identity = Identity::from_pem(
            read("--cert-file", cert_file)?,
            read("--key-file", key_file)?,
        );
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.trusted_ca_file {
            config = config.client_ca_root(Certificate::from_pem(read("--trusted-ca-file", ca)?));
        }
        Ok(Some(Tls {
            config,
            cert_file: cert_file.clone(),
            client_ca: self.trusted_ca_file.clone(),
        }))
    }
}
