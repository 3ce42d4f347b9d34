//! faultline-store over TLS, as etcd's flags set it up: etcdctl 3.4 connects with the CA,
//! with and without a client certificate where one is required, and plain text is refused.
//!
//! Certificates are made for each run with the `openssl` command (a CA, a server certificate for
//! 127.0.0.1 and a client certificate, both signed by the CA). Needs etcdctl (Debian's
//! etcd-client) and openssl: without them this test fails, loudly, saying what to install.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_faultline-store");

fn on_path(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "\n\n******** {name} NOT FOUND on PATH ********\nthis test needs it: `sudo apt-get install {package}`, then run it again\n\n"
            )
        })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(on_path("openssl", "openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and `server.pem` (for 127.0.0.1 and localhost) and `client.pem` signed by it, with keys.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=faultline test CA",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ],
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, flags: &[String]) -> Served {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db", ":memory:"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("store.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "no address line, got {line:?}; log:\n{}",
                std::fs::read_to_string(dir.join("store.log")).unwrap_or_default()
            )
        })
        .to_string();
    Served { child, addr }
}

/// etcdctl against `endpoint` with extra flags; (succeeded, stdout + stderr).
fn etcdctl(endpoint: &str, flags: &[String], args: &[&str]) -> (bool, String) {
    let out = Command::new(on_path("etcdctl", "etcd-client"))
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--dial-timeout",
            "2s",
            "--command-timeout",
            "3s",
        ])
        .args(flags)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn path_flag(flag: &str, dir: &Path, file: &str) -> String {
    format!("{flag}={}", dir.join(file).display())
}

#[test]
fn etcdctl_reaches_the_store_over_tls_and_plain_text_is_refused() {
    let dir = temp_dir("server");
    make_certificates(&dir);
    let served = serve(
        &dir,
        &[
            path_flag("--cert-file", &dir, "server.pem"),
            path_flag("--key-file", &dir, "server-key.pem"),
        ],
    );
    let https = format!("https://{}", served.addr);
    let ca = [path_flag("--cacert", &dir, "ca.pem")];

    let (ok, text) = etcdctl(&https, &ca, &["put", "/tls/a", "over-tls"]);
    assert!(ok, "put over TLS failed: {text}");
    let (ok, text) = etcdctl(&https, &ca, &["get", "/tls/a", "--print-value-only"]);
    assert!(ok && text.trim() == "over-tls", "get over TLS: {text}");

    // A client that does not trust the server's CA is refused by its own check.
    let (ok, text) = etcdctl(&https, &[], &["get", "/tls/a"]);
    assert!(!ok, "a client without the CA connected: {text}");

    // Plain text to a TLS port: the handshake never happens, nothing is served.
    let (ok, text) = etcdctl(&format!("http://{}", served.addr), &[], &["get", "/tls/a"]);
    assert!(!ok, "plain text was served: {text}");
}

#[test]
fn client_cert_auth_requires_a_certificate_signed_by_the_trusted_ca() {
    let dir = temp_dir("mutual");
    make_certificates(&dir);
    let served = serve(
        &dir,
        &[
            path_flag("--cert-file", &dir, "server.pem"),
            path_flag("--key-file", &dir, "server-key.pem"),
            path_flag("--trusted-ca-file", &dir, "ca.pem"),
            "--client-cert-auth".into(),
        ],
    );
    let https = format!("https://{}", served.addr);
    let ca = path_flag("--cacert", &dir, "ca.pem");

    let (ok, text) = etcdctl(&https, std::slice::from_ref(&ca), &["put", "/tls/b", "x"]);
    assert!(!ok, "served a client without a certificate: {text}");

    // A certificate the trusted CA did not sign (self-signed) is refused too.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=stranger",
            "-keyout",
            "stranger-key.pem",
            "-out",
            "stranger.pem",
        ],
    );
    let stranger = [
        ca.clone(),
        path_flag("--cert", &dir, "stranger.pem"),
        path_flag("--key", &dir, "stranger-key.pem"),
    ];
    let (ok, text) = etcdctl(&https, &stranger, &["put", "/tls/b", "x"]);
    assert!(
        !ok,
        "served a client whose certificate the CA did not sign: {text}"
    );

    let client = [
        ca,
        path_flag("--cert", &dir, "client.pem"),
        path_flag("--key", &dir, "client-key.pem"),
    ];
    let (ok, text) = etcdctl(&https, &client, &["put", "/tls/b", "mutual"]);
    assert!(ok, "put with a client certificate failed: {text}");
    let (ok, text) = etcdctl(&https, &client, &["get", "/tls/b", "--print-value-only"]);
    assert!(
        ok && text.trim() == "mutual",
        "get with a client certificate: {text}"
    );
}

/// A TLS flag given wrongly exits 2 naming the flag, before any database is created.
#[test]
fn tls_flags_given_wrongly_exit_2_naming_the_flag() {
    let dir = temp_dir("flags");
    make_certificates(&dir);
    let db = dir.join("never.db");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![path_flag("--cert-file", &dir, "server.pem")],
            "--cert-file needs --key-file",
        ),
        (
            vec![path_flag("--key-file", &dir, "server-key.pem")],
            "--key-file needs --cert-file",
        ),
        (
            vec![path_flag("--trusted-ca-file", &dir, "ca.pem")],
            "--trusted-ca-file and --client-cert-auth need TLS",
        ),
        (
            vec![
                path_flag("--cert-file", &dir, "server.pem"),
                path_flag("--key-file", &dir, "server-key.pem"),
                "--client-cert-auth".into(),
            ],
            "--client-cert-auth needs --trusted-ca-file",
        ),
        (
            vec![
                path_flag("--cert-file", &dir, "missing.pem"),
                path_flag("--key-file", &dir, "server-key.pem"),
            ],
            "--cert-file",
        ),
        (
            vec![
                path_flag("--cert-file", &dir, "server.pem"),
                path_flag("--key-file", &dir, "server.ext"),
            ],
            "--key-file",
        ),
    ];
    for (flags, expected) in cases {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args(&flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{flags:?}: expected {expected:?} in {stderr}"
        );
        assert!(
            !db.exists(),
            "{flags:?} created the database before refusing"
        );
    }
}
