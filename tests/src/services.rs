//! The other real peers, started on free loopback ports for one test and stopped when dropped:
//! `moto_server` (AWS Secrets Manager) and `bao server -dev` (the Vault API, OpenBao).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::controlplane::{HarnessError, Proc, Result, free_port, io, spawn, tail};

/// A running peer process.
pub struct Service {
    proc: Proc,
    _dir: tempfile::TempDir,
    /// Its configuration's directory, when it has one besides the log's.
    _config: Option<tempfile::TempDir>,
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The OpenBao root token (dev mode), empty for other services.
    pub token: String,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.proc.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

impl Service {
    /// Stops the process now (to simulate an outage); the `Service` stays for its URL.
    pub fn stop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// The log file (standard output and error).
    pub fn log(&self) -> PathBuf {
        self.proc.log.clone()
    }

    /// Waits up to `bound` for the process to exit on its own: its status, or `None` if it
    /// still runs.
    pub fn wait(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > bound {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod, and waits up to `bound` for the exit.
    pub fn terminate(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.proc.child.id().to_string()])
            .status();
        self.wait(bound)
    }
}

fn start(name: &'static str, mut cmd: Command, port: u16, token: &str, ready: &str) -> Result<Service> {
    let dir = io(
        "creating a service directory",
        tempfile::Builder::new().prefix("lockstep-svc-").tempdir(),
    )?;
    let mut proc = spawn(name, &mut cmd, dir.path())?;
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    let bound = Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(HarnessError::Crashed {
                name,
                status: status.to_string(),
                log: proc.log.display().to_string(),
                tail: tail(&proc.log, 15),
            });
        }
        let up = if ready.is_empty() {
            // TLS servers: a TCP connection is all this minimal client can check.
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
        } else {
            matches!(http(port, "GET", ready, &[], b""), Ok((200, _)))
        };
        if up {
            return Ok(Service {
                proc,
                _dir: dir,
                _config: None,
                url,
                token: token.to_owned(),
            });
        }
        if start.elapsed() > bound {
            return Err(HarnessError::Timeout {
                name,
                seconds: bound.as_secs(),
                log: proc.log.display().to_string(),
                tail: tail(&proc.log, 15),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Secrets Manager client for moto at `endpoint` (region us-east-1, moto's test keys).
pub async fn aws_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// Starts `moto_server` (AWS APIs, Secrets Manager among them).
pub fn moto() -> Result<Service> {
    moto_on(free_port()?)
}

/// [`moto`] on a given port (to bring a stopped one back where its clients expect it).
pub fn moto_on(port: u16) -> Result<Service> {
    let mut cmd = Command::new(crate::peer("moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    start("moto_server", cmd, port, "", "/moto-api/")
}

/// Starts `bao server -dev` (in-memory, unsealed, KV v2 at `secret/`) with a random root token.
pub fn openbao() -> Result<Service> {
    openbao_with_token(&format!("root-{:016x}", rand::random::<u64>()))
}

/// [`openbao`] with a given root token.
pub fn openbao_with_token(token: &str) -> Result<Service> {
    let port = free_port()?;
    let mut cmd = Command::new(crate::peer("bao"));
    cmd.args(["server", "-dev", "-dev-no-store-token"])
        .arg(format!("-dev-root-token-id={token}"))
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"));
    start("bao", cmd, port, token, "/v1/sys/health")
}

/// A minimal HTTP/1.0 request to a loopback port, for readiness checks and smoke tests:
/// `(status, body)`.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String)> {
    let mut s = io(
        "connecting",
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)),
    )?;
    io(
        "setting a timeout",
        s.set_read_timeout(Some(Duration::from_secs(10))),
    )?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    io(
        "sending",
        s.write_all(req.as_bytes()).and_then(|()| s.write_all(body)),
    )?;
    let mut resp = String::new();
    io("reading", s.read_to_string(&mut resp))?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A GitHub `push` event for `reference` of `url`, signed with `secret` as GitHub signs it
/// (`X-Hub-Signature-256`), posted to `/hook/github` on a loopback port: `(status, body)`.
pub fn github_push(port: u16, url: &str, reference: &str, secret: &str) -> Result<(u16, String)> {
    use hmac::Mac;
    let body = serde_json::json!({ "ref": reference, "repository": { "clone_url": url, "html_url": url } })
        .to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    http(
        port,
        "POST",
        "/hook/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

/// Runs a controller built for in-cluster use (it reads `rest.InClusterConfig()`: the
/// `KUBERNETES_SERVICE_*` variables and `/var/run/secrets/kubernetes.io/serviceaccount`) against
/// the test control plane as ServiceAccount `sa` of `namespace`. A private mount namespace puts
/// the token and CA where it looks, without touching the machine's `/run`.
pub async fn in_cluster(
    cp: &crate::controlplane::ControlPlane,
    name: &'static str,
    program: &std::path::Path,
    args: &[&str],
    namespace: &str,
    sa: &str,
) -> Result<Service> {
    let token = cp.service_account_token(namespace, sa).await?;
    let dir = io(
        "creating a service directory",
        tempfile::Builder::new().prefix("lockstep-incluster-").tempdir(),
    )?;
    io(
        "writing the token",
        std::fs::write(dir.path().join("token"), token),
    )?;
    io(
        "writing the CA",
        std::fs::write(dir.path().join("ca.crt"), cp.ca_pem()),
    )?;
    io(
        "writing the namespace",
        std::fs::write(dir.path().join("namespace"), namespace),
    )?;
    let port = cp.server().rsplit(':').next().unwrap_or("443").to_owned();
    let script = r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp "$0"/token "$0"/ca.crt "$0"/namespace /run/secrets/kubernetes.io/serviceaccount/
exec "$@""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(dir.path())
        .arg(program)
        .args(args)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port)
        .env("POD_NAMESPACE", namespace);
    let proc = spawn(name, &mut cmd, dir.path())?;
    Ok(Service {
        proc,
        _dir: dir,
        _config: None,
        url: String::new(),
        token: String::new(),
    })
}

/// Serves the bare repositories under `root` over smart HTTP with the real `git http-backend`
/// (as CGI under Python's `http.server`): `<url>/<name>.git`.
pub fn git_http(root: &std::path::Path) -> Result<Service> {
    git_http_with_auth(root, None)
}

/// [`git_http`], refusing (401, `WWW-Authenticate: Basic`) every request whose
/// `Authorization` header is not exactly `authorization` (e.g. `Basic dXNlcjpwYXNz` or
/// `Bearer t0ken`), as a Git host does.
pub fn git_http_with_auth(root: &std::path::Path, authorization: Option<&str>) -> Result<Service> {
    git_server(root, authorization, None)
}

/// [`git_http_with_auth`] over HTTPS, with a fresh self-signed certificate for `127.0.0.1`;
/// returns the service (its `url` is `https://`) and the certificate (PEM) to trust.
pub fn git_https_with_auth(root: &std::path::Path, authorization: Option<&str>) -> Result<(Service, String)> {
    let (ca, cert, key) = test_pki()?;
    let svc = git_server(root, authorization, Some((&cert, &key)))?;
    Ok((svc, ca))
}

/// A fresh CA and a certificate it signed for `127.0.0.1` and `localhost`: (CA PEM, leaf PEM,
/// leaf key PEM).
fn test_pki() -> Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let pki = || -> std::result::Result<(String, String, String), rcgen::Error> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name.push(DnType::CommonName, "lockstep-test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &ca)?;
        Ok((ca.pem(), cert.pem(), key.serialize_pem()))
    };
    pki().map_err(|e| HarnessError::Kube(format!("a TLS certificate: {e}")))
}

/// A static file server over HTTPS (a Helm chart repository: `index.yaml` and archives, as
/// `helm repo index` writes them) serving `root`, refusing (401) every request whose
/// `Authorization` header is not exactly `authorization`; returns the service (its `url` is
/// `https://127.0.0.1:<port>`) and the CA certificate (PEM) to trust.
pub fn static_https_with_auth(
    root: &std::path::Path,
    authorization: Option<&str>,
) -> Result<(Service, String)> {
    let (ca, cert, key) = test_pki()?;
    let port = free_port()?;
    let dir = io(
        "creating a service directory",
        tempfile::Builder::new().prefix("lockstep-static-").tempdir(),
    )?;
    const SERVER: &str = r#"
import functools, http.server, os, ssl, sys, warnings
warnings.simplefilter("ignore")
WANT = os.environ.get("LOCKSTEP_AUTHORIZATION")
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if WANT and self.headers.get("Authorization") != WANT:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="charts"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()
    def log_message(self, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), functools.partial(H, directory=sys.argv[4]))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;
    let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    io("writing the TLS certificate", std::fs::write(&c, &cert))?;
    io("writing the TLS key", std::fs::write(&k, &key))?;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SERVER, &port.to_string()])
        .arg(&c)
        .arg(&k)
        .arg(root);
    if let Some(a) = authorization {
        cmd.env("LOCKSTEP_AUTHORIZATION", a);
    }
    let mut svc = start("chart-repository", cmd, port, "", "")?;
    svc.url = format!("https://127.0.0.1:{port}");
    svc._config = Some(dir);
    Ok((svc, ca))
}

/// An OCI registry (CNCF Distribution's `registry`, built by `cargo xtask setup`) over HTTPS
/// with htpasswd authentication for `user`/`password`, storing under a fresh directory; returns
/// the service (its `url` is `127.0.0.1:<port>`, a registry host as `oci://` URLs name it) and
/// the CA certificate (PEM) to trust.
pub fn oci_registry(user: &str, password: &str) -> Result<(Service, String)> {
    let (ca, cert, key) = test_pki()?;
    let port = free_port()?;
    let dir = io(
        "creating a service directory",
        tempfile::Builder::new().prefix("lockstep-registry-").tempdir(),
    )?;
    let hash = bcrypt::hash(password, 5).map_err(|e| HarnessError::Kube(format!("bcrypt: {e}")))?;
    let p = |n: &str| dir.path().join(n);
    io(
        "writing htpasswd",
        std::fs::write(p("htpasswd"), format!("{user}:{hash}\n")),
    )?;
    io("writing the TLS certificate", std::fs::write(p("tls.crt"), &cert))?;
    io("writing the TLS key", std::fs::write(p("tls.key"), &key))?;
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: lockstep\n    path: {}\n",
        p("data").display(),
        p("tls.crt").display(),
        p("tls.key").display(),
        p("htpasswd").display(),
    );
    io(
        "writing the registry config",
        std::fs::write(p("config.yml"), config),
    )?;
    let mut cmd = Command::new(crate::peer("registry"));
    cmd.arg("serve").arg(p("config.yml"));
    let mut svc = start("registry", cmd, port, "", "")?;
    svc.url = format!("127.0.0.1:{port}");
    svc._config = Some(dir);
    Ok((svc, ca))
}

fn git_server(
    root: &std::path::Path,
    authorization: Option<&str>,
    tls: Option<(&str, &str)>,
) -> Result<Service> {
    let port = free_port()?;
    let dir = io(
        "creating a service directory",
        tempfile::Builder::new().prefix("lockstep-githttp-").tempdir(),
    )?;
    let cgi = dir.path().join("cgi-bin");
    io("creating cgi-bin", std::fs::create_dir_all(&cgi))?;
    let script = format!(
        "#!/bin/sh\nexport GIT_PROJECT_ROOT='{}'\nexport GIT_HTTP_EXPORT_ALL=1\n\
         export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\nexec git http-backend\n",
        root.display()
    );
    io("writing the CGI script", std::fs::write(cgi.join("git"), script))?;
    {
        use std::os::unix::fs::PermissionsExt;
        io(
            "making it executable",
            std::fs::set_permissions(cgi.join("git"), std::fs::Permissions::from_mode(0o755)),
        )?;
        // The CGI handler drops to `nobody` when run as root: let it read everything.
        for p in [dir.path(), cgi.as_path()] {
            io(
                "opening permissions",
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)),
            )?;
        }
    }
    // http.server's CGI handler, behind an Authorization check when one is asked for.
    const SERVER: &str = r#"
import http.server, os, sys, warnings
warnings.simplefilter("ignore")
WANT = os.environ.get("LOCKSTEP_GIT_AUTHORIZATION")
class H(http.server.CGIHTTPRequestHandler):
    def denied(self):
        if WANT and self.path.startswith("/cgi-bin") and self.headers.get("Authorization") != WANT:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        return False
    def do_GET(self):
        if not self.denied(): super().do_GET()
    def do_POST(self):
        if not self.denied(): super().do_POST()
class S(http.server.ThreadingHTTPServer):
    def shutdown_request(self, request):
        # Responses end at connection close: TLS clients want a close_notify first.
        if hasattr(request, "unwrap"):
            try:
                request.settimeout(2)
                request.unwrap()
            except Exception:
                pass
        super().shutdown_request(request)
srv = S(("127.0.0.1", int(sys.argv[1])), H)
if len(sys.argv) > 2:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    # A forked CGI child would write plaintext straight to the socket: use pipes instead.
    H.have_fork = False
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;
    let mut cmd = Command::new("python3");
    cmd.current_dir(dir.path())
        .args(["-c", SERVER, &port.to_string()]);
    if let Some(a) = authorization {
        cmd.env("LOCKSTEP_GIT_AUTHORIZATION", a);
    }
    if let Some((cert, key)) = tls {
        let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        io("writing the TLS certificate", std::fs::write(&c, cert))?;
        io("writing the TLS key", std::fs::write(&k, key))?;
        cmd.arg(&c).arg(&k);
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ready = if tls.is_some() { "" } else { "/" };
    let mut svc = start("git-http-backend", cmd, port, "", ready)?;
    svc.url = format!("{scheme}://127.0.0.1:{port}/cgi-bin/git");
    svc._config = Some(dir);
    Ok(svc)
}

/// The machine's first non-loopback IPv4 address. The API server's service proxy refuses
/// loopback endpoints, so a process serving a Service from this machine listens there.
pub fn host_ip() -> Result<std::net::Ipv4Addr> {
    let out = io(
        "running `ip -4 -o addr show scope global`",
        Command::new("ip")
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output(),
    )?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .next()
        .ok_or_else(|| {
            HarnessError::Kube(
                "this machine has no non-loopback IPv4 address; the service proxy needs one".into(),
            )
        })
}

/// Makes `ip:port` reachable as Service `namespace/name` (port named `port_name`) through the
/// API server's service proxy: a Service without a selector, with an Endpoints object and an
/// EndpointSlice pointing at it, and a stand-in Pod with that IP (needs the controller manager,
/// for the namespace's `default` ServiceAccount).
pub async fn expose(
    cp: &crate::controlplane::ControlPlane,
    namespace: &str,
    name: &str,
    port_name: &str,
    ip: std::net::Ipv4Addr,
    port: u16,
) -> Result<()> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let kerr = |e: kube::Error| HarnessError::Kube(e.to_string());
    let client = cp.client().await?;
    let pp = kube::api::PostParams::default();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": { "ports": [{ "name": port_name, "port": 8080, "targetPort": port, "protocol": "TCP" }] }
    }))
    .map_err(|e| HarnessError::Kube(e.to_string()))?;
    kube::Api::<Service>::namespaced(client.clone(), namespace)
        .create(&pp, &svc)
        .await
        .map_err(kerr)?;
    // The proxy only forwards to addresses of Pods whose status carries that IP.
    let pod_name = format!("{name}-process");
    stand_in_pod(cp, namespace, &pod_name, &serde_json::json!({}), &[], ip).await?;
    let ep: Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "subsets": [{
            "addresses": [{ "ip": ip.to_string(), "targetRef": { "kind": "Pod", "namespace": namespace, "name": pod_name } }],
            "ports": [{ "name": port_name, "port": port, "protocol": "TCP" }]
        }]
    }))
    .map_err(|e| HarnessError::Kube(e.to_string()))?;
    kube::Api::<Endpoints>::namespaced(client.clone(), namespace)
        .create(&pp, &ep)
        .await
        .map_err(kerr)?;
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{name}-manual"), "labels": { "kubernetes.io/service-name": name } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [ip.to_string()], "conditions": { "ready": true } }],
        "ports": [{ "name": port_name, "port": port, "protocol": "TCP" }]
    }))
    .map_err(|e| HarnessError::Kube(e.to_string()))?;
    kube::Api::<EndpointSlice>::namespaced(client, namespace)
        .create(&pp, &slice)
        .await
        .map_err(kerr)?;
    Ok(())
}

/// The Node that stand-in Pods are bound to (no kubelet runs on it).
const STAND_IN_NODE: &str = "lockstep-stand-in";

/// Creates Pod `namespace/name` that stands for a process of this machine at `ip`: bound to a
/// Node no kubelet runs on, its status written by hand (Running, Ready, `podIP`), with `labels` and named
/// container `ports`, and a spec that the `restricted` Pod Security profile admits. A Service
/// selecting those labels then gets endpoints from the real endpoint-slice controller (the
/// controller manager must run), and the API server's service proxy forwards to `ip`.
pub async fn stand_in_pod(
    cp: &crate::controlplane::ControlPlane,
    namespace: &str,
    name: &str,
    labels: &serde_json::Value,
    ports: &[(&str, u16)],
    ip: std::net::Ipv4Addr,
) -> Result<()> {
    use k8s_openapi::api::core::v1::{Node, Pod};
    let kerr = |e: kube::Error| HarnessError::Kube(e.to_string());
    let client = cp.client().await?;
    // The endpoint-slice controller skips Pods whose Node it cannot find: one that no kubelet
    // runs on stands for this machine.
    let node: Node = serde_json::from_value(serde_json::json!({ "metadata": { "name": STAND_IN_NODE } }))
        .map_err(|e| HarnessError::Kube(e.to_string()))?;
    match kube::Api::<Node>::all(client.clone())
        .create(&kube::api::PostParams::default(), &node)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(kerr(e)),
    }
    let ports: Vec<serde_json::Value> = ports
        .iter()
        .map(|(n, p)| serde_json::json!({ "name": n, "containerPort": p, "protocol": "TCP" }))
        .collect();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "nodeName": STAND_IN_NODE,
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532,
                                 "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "process", "image": "lockstep.invalid/none", "ports": ports,
                "securityContext": { "allowPrivilegeEscalation": false,
                                     "capabilities": { "drop": ["ALL"] } },
            }],
        }
    }))
    .map_err(|e| HarnessError::Kube(e.to_string()))?;
    let pods = kube::Api::<Pod>::namespaced(client, namespace);
    let started = Instant::now();
    loop {
        // The ServiceAccount admission plugin wants `default`, which the controller manager
        // creates shortly after the namespace.
        match pods.create(&kube::api::PostParams::default(), &pod).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 403 && started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(kerr(e)),
        }
    }
    let now = lockstep_formats::sops::now_rfc3339();
    let status = serde_json::json!({ "status": {
        "phase": "Running", "podIP": ip.to_string(), "podIPs": [{ "ip": ip.to_string() }],
        "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": now }],
    }});
    pods.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .map_err(kerr)?;
    Ok(())
}

/// Git over SSH from the real OpenSSH `sshd` (Debian's `openssh-server`), for one test.
pub struct SshGit {
    /// The sshd process.
    pub service: Service,
    /// `ssh://<user>@127.0.0.1:<port>`: append the repository's absolute path.
    pub url: String,
    /// The `known_hosts` line for the server's host key.
    pub known_hosts: String,
    /// An authorised private key without a passphrase (OpenSSH format).
    pub identity: String,
    /// An authorised private key protected by [`SshGit::passphrase`].
    pub protected_identity: String,
    /// The passphrase of [`SshGit::protected_identity`].
    pub passphrase: String,
    _keys: tempfile::TempDir,
}

impl std::fmt::Debug for SshGit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshGit")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Starts `sshd` on a free loopback port with fresh host and client keys made by `ssh-keygen`,
/// letting the current user in by public key only; its own configuration, nothing of the
/// machine's (`/usr/sbin/sshd` must exist: `cargo xtask setup` installs it).
pub fn git_ssh() -> Result<SshGit> {
    let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            HarnessError::Kube("sshd not found; run `cargo xtask setup` (installs openssh-server)".into())
        })?;
    let dir = io(
        "creating the sshd directory",
        tempfile::Builder::new().prefix("lockstep-sshd-").tempdir(),
    )?;
    let d = dir.path();
    let keygen = |file: &str, pass: &str| -> Result<String> {
        let out = io(
            "running ssh-keygen",
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-C", "lockstep-test", "-N", pass, "-f"])
                .arg(d.join(file))
                .output(),
        )?;
        if !out.status.success() {
            return Err(HarnessError::Kube(format!(
                "ssh-keygen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        io("reading the key", std::fs::read_to_string(d.join(file)))
    };
    keygen("host", "")?;
    let identity = keygen("id", "")?;
    let passphrase = format!("pass-{:08x}", rand::random::<u32>());
    let protected_identity = keygen("id_protected", &passphrase)?;
    let read = |f: &str| io("reading a public key", std::fs::read_to_string(d.join(f)));
    io(
        "writing authorized_keys",
        std::fs::write(
            d.join("authorized_keys"),
            read("id.pub")? + &read("id_protected.pub")?,
        ),
    )?;
    let user = String::from_utf8_lossy(&io("running id -un", Command::new("id").arg("-un").output())?.stdout)
        .trim()
        .to_owned();
    let port = free_port()?;
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
         PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel VERBOSE\n",
        d = d.display()
    );
    io(
        "writing sshd_config",
        std::fs::write(d.join("sshd_config"), config),
    )?;
    // Privilege separation needs its (empty) directory when sshd runs as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let mut cmd = Command::new(sshd);
    cmd.arg("-D").arg("-e").arg("-f").arg(d.join("sshd_config"));
    let mut service = start("sshd", cmd, port, "", "")?;
    let host_pub = read("host.pub")?;
    let mut parts = host_pub.split_whitespace();
    let known_hosts = format!(
        "[127.0.0.1]:{port} {} {}\n",
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default()
    );
    service.url = format!("ssh://{user}@127.0.0.1:{port}");
    let url = service.url.clone();
    Ok(SshGit {
        service,
        _keys: dir,
        url,
        known_hosts,
        identity,
        protected_identity,
        passphrase,
    })
}
