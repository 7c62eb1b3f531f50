//! A private PostgreSQL server that accepts TLS connections only, with a certificate authority
//! the test creates (`openssl`), for the `sslmode=verify-full` tests. It runs from a temporary
//! directory on a free port, as the `postgres` user when the tests run as root, and is stopped
//! on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The server and its certificates.
pub struct TlsPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The CA that signed the server's certificate (subject alternative name `localhost` only).
    pub ca: PathBuf,
    /// A CA that signed nothing the server holds.
    pub wrong_ca: PathBuf,
}

fn run(command: &mut Command) {
    let output = command.stdin(Stdio::null()).output().expect("spawning a command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// A command run as the server's owner (`postgres` when the tests run as root).
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The newest installed server's binaries (Debian's layout).
fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/bootstrap.sh installs them)")
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// A CA key and self-signed certificate named `name` in `dir`.
fn certificate_authority(dir: &Path, name: &str) -> PathBuf {
    let (key, cert) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pem")));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    cert
}

impl TlsPostgres {
    /// initdb, certificates, `hostssl`-only authentication, start; waits until it accepts.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(super::unique("credit-tls-postgres"));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = certificate_authority(&dir, "test-ca");
        let wrong_ca = certificate_authority(&dir, "wrong-ca");
        let (server_key, server_csr, server_cert) =
            (dir.join("server.key"), dir.join("server.csr"), dir.join("server.pem"));
        run(Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout"])
            .arg(&server_key)
            .arg("-out")
            .arg(&server_csr));
        let extensions = dir.join("server.ext");
        std::fs::write(&extensions, "subjectAltName = DNS:localhost\n").unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(&server_csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(dir.join("test-ca.key"))
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(&server_cert));
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres"]).arg(&dir));
        }
        run(Command::new("chmod").arg("0600").arg(&server_key));
        let bin = server_bin();
        let data = dir.join("data");
        run(as_owner(&bin.join("initdb")).args(["--no-sync", "--auth=trust", "--username=postgres", "-D"]).arg(&data));
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .unwrap();
        let port = super::free_port();
        let settings = format!(
            "listen_addresses = 'localhost'\nport = {port}\nunix_socket_directories = '{dir}'\nfsync = off\n\
             ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\nmax_connections = 40\n",
            dir = dir.display(),
            cert = server_cert.display(),
            key = server_key.display(),
        );
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&settings);
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        run(as_owner(&bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-l"])
            .arg(dir.join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
        Self { port, dir, bin, ca, wrong_ca }
    }

    /// A URL for the `postgres` database over TLS, verified against `ca` (`sslmode=verify-full`).
    pub fn url(&self, host: &str, ca: &Path) -> String {
        format!("postgres://postgres@{host}:{}/postgres?sslmode=verify-full&sslrootcert={}", self.port, ca.display())
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_owner(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
