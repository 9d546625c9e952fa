//! A real Kubernetes control plane for tests: `etcd` and `kube-apiserver` (and, on request,
//! `kube-controller-manager` for garbage collection and namespace deletion) started on free
//! loopback ports, the way controller-runtime's envtest does it.
//!
//! * Binaries come from `$KUBEBUILDER_ASSETS` when set (envtest's layout), else from the cache
//!   `cargo xtask setup` fills (built from the Go module proxy).
//! * A private CA signs the serving certificate and client certificates: the admin is in
//!   `system:masters`; [`ControlPlane::client_as`] mints any other identity, which RBAC
//!   (the only authorizer) then judges.
//! * etcd keeps its data on tmpfs with `--unsafe-no-fsync`.
//! * Every wait is bounded; a crashed process is reported with the tail of its log.
//! * The processes are stopped when the `ControlPlane` is dropped, and a watchdog stops them
//!   when the test process exits without dropping it (a `static` never is).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// Why the control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A binary is missing.
    #[error(
        "{name} not found in {dir}: run `cargo xtask setup` (or set KUBEBUILDER_ASSETS to envtest's binaries)"
    )]
    MissingBinary {
        /// The binary.
        name: &'static str,
        /// Where it was looked for.
        dir: String,
    },
    /// A process exited while starting.
    #[error("{name} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Crashed {
        /// The process.
        name: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: String,
        /// The end of the log.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error("{name} was not ready after {seconds} s; last lines of {log}:\n{tail}")]
    Timeout {
        /// The process.
        name: &'static str,
        /// The bound that was hit.
        seconds: u64,
        /// Its log file.
        log: String,
        /// The end of the log.
        tail: String,
    },
    /// Certificates could not be made.
    #[error("test PKI: {0}")]
    Pki(#[from] rcgen::Error),
    /// A kube client could not be built.
    #[error("kube client: {0}")]
    Kube(String),
    /// A step of the demo failed.
    #[error("{0}")]
    Demo(String),
    /// File or process I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) type Result<T, E = HarnessError> = std::result::Result<T, E>;

pub(crate) fn io<T>(what: impl Into<String>, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| HarnessError::Io {
        what: what.into(),
        source,
    })
}

/// How to start a control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also run kube-controller-manager (garbage collector, namespace controller).
    pub controller_manager: bool,
    /// Where the binaries are (default: [`assets_dir`]).
    pub assets: Option<PathBuf>,
    /// Bound on each process' start-up (default: 30 s for etcd, 120 s for the apiserver).
    pub ready_timeout: Option<Duration>,
}

/// Bounds on start-up waits.
const ETCD_READY: Duration = Duration::from_secs(30);
const APISERVER_READY: Duration = Duration::from_secs(120);
const START_ATTEMPTS: usize = 3;

pub(crate) struct Proc {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

/// A running control plane. Dropping it stops the processes and removes their data.
pub struct ControlPlane {
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
    server: String,
    ca_pem: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    admin_kubeconfig: PathBuf,
    /// Seconds from spawning etcd to the apiserver's `/readyz` answering `ok`.
    pub start_seconds: f64,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Stop the API layer before its storage.
        for p in self.procs.iter_mut().rev() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Where the control-plane binaries are: `$KUBEBUILDER_ASSETS`, else the project cache.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("KUBEBUILDER_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::cache_dir().join("bin"))
}

fn binary(dir: &Path, name: &'static str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(HarnessError::MissingBinary {
            name,
            dir: dir.display().to_string(),
        })
    }
}

pub(crate) fn free_port() -> Result<u16> {
    let l = io("binding a free loopback port", TcpListener::bind("127.0.0.1:0"))?;
    Ok(io("reading the port", l.local_addr())?.port())
}

pub(crate) fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl ControlPlane {
    /// The control plane shared by every test in this test binary, started on first use.
    pub fn shared() -> &'static ControlPlane {
        Self::shared_with(Options {
            controller_manager: true,
            ..Options::default()
        })
    }

    /// Like [`ControlPlane::shared`], with options that apply when it is first started.
    pub fn shared_with(opts: Options) -> &'static ControlPlane {
        static CP: OnceLock<ControlPlane> = OnceLock::new();
        CP.get_or_init(|| match Self::start(&opts) {
            Ok(cp) => cp,
            // Test support: every test of the binary needs it, so say why loudly.
            #[allow(clippy::panic)]
            Err(e) => panic!("could not start the test control plane: {e}"),
        })
    }

    /// Starts a new control plane; retries with new ports when one was taken meanwhile.
    pub fn start(opts: &Options) -> Result<Self> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(opts) {
                Ok(cp) => return Ok(cp),
                Err(e) if e.to_string().contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Kube("start failed".into())))
    }

    fn start_once(opts: &Options) -> Result<Self> {
        let assets = opts.assets.clone().unwrap_or_else(assets_dir);
        let etcd_bin = binary(&assets, "etcd")?;
        let apiserver_bin = binary(&assets, "kube-apiserver")?;
        let kcm_bin = if opts.controller_manager {
            Some(binary(&assets, "kube-controller-manager")?)
        } else {
            None
        };
        // tmpfs when there is one: etcd's writes then cost nothing.
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = io(
            "creating the control-plane directory",
            tempfile::Builder::new().prefix("lockstep-cp-").tempdir_in(base),
        )?;
        let d = dir.path().to_path_buf();
        let write =
            |name: &str, text: &str| io(format!("writing {name}"), std::fs::write(d.join(name), text));

        // PKI: a CA, the apiserver's serving certificate, the admin's client certificate, and
        // the service-account signing key.
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "lockstep-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let ca_pem = ca.pem();
        let mut serving = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;
        let sa_key = KeyPair::generate()?;
        write("ca.crt", &ca_pem)?;
        write("apiserver.crt", &serving_cert.pem())?;
        write("apiserver.key", &serving_key.serialize_pem())?;
        write("sa.key", &sa_key.serialize_pem())?;
        write("sa.pub", &sa_key.public_key_pem())?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let started = Instant::now();
        let mut procs = Vec::new();

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(&etcd_bin);
        etcd.arg("--data-dir")
            .arg(d.join("etcd"))
            .args(["--name", "default", "--unsafe-no-fsync", "--log-level", "warn"])
            .args([
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("default={peer_url}")]);
        procs.push(spawn("etcd", &mut etcd, &d)?);
        let mut cp = ControlPlane {
            procs,
            dir,
            server: server.clone(),
            ca_pem,
            ca,
            admin_kubeconfig: d.join("admin.kubeconfig"),
            start_seconds: 0.0,
        };
        cp.wait("etcd", opts.ready_timeout.unwrap_or(ETCD_READY), || {
            etcd_healthy(etcd_port)
        })?;

        let mut api = Command::new(&apiserver_bin);
        api.arg(format!("--etcd-servers={etcd_url}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--cert-dir={}", d.join("certs").display()))
            .arg(format!("--tls-cert-file={}", d.join("apiserver.crt").display()))
            .arg(format!(
                "--tls-private-key-file={}",
                d.join("apiserver.key").display()
            ))
            .arg(format!("--client-ca-file={}", d.join("ca.crt").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                d.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ))
            .args([
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
            ])
            // No kubelet, no endpoints to reconcile; less background work on a small machine.
            .args([
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
            ])
            .arg("--disable-admission-plugins=ServiceAccount");
        cp.procs.push(spawn("kube-apiserver", &mut api, cp.dir.path())?);

        let admin = cp.kubeconfig_as("lockstep-admin", &["system:masters"])?;
        io(
            "writing the admin kubeconfig",
            std::fs::rename(&admin, &cp.admin_kubeconfig),
        )?;
        let kubeconfig = cp.admin_kubeconfig.clone();
        cp.wait(
            "kube-apiserver",
            opts.ready_timeout.unwrap_or(APISERVER_READY),
            || readyz(&kubeconfig),
        )?;

        if let Some(kcm) = kcm_bin {
            let kcm_port = free_port()?;
            let mut c = Command::new(kcm);
            c.arg(format!("--kubeconfig={}", cp.admin_kubeconfig.display()))
                .args(["--leader-elect=false", "--bind-address=127.0.0.1"])
                .arg(format!("--secure-port={kcm_port}"))
                .arg("--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,horizontalpodautoscaling,endpoint,endpointslice,clusterrole-aggregation,job")
                .arg("--horizontal-pod-autoscaler-sync-period=2s")
                .arg(format!(
                    "--service-account-private-key-file={}",
                    d.join("sa.key").display()
                ))
                .arg(format!("--root-ca-file={}", d.join("ca.crt").display()))
                .arg("--use-service-account-credentials=false");
            cp.procs
                .push(spawn("kube-controller-manager", &mut c, cp.dir.path())?);
            cp.wait("kube-controller-manager", Duration::from_secs(60), || {
                tcp_open(kcm_port)
            })?;
        }
        cp.start_seconds = started.elapsed().as_secs_f64();
        Ok(cp)
    }

    /// Polls `ready` until it returns true, failing early if the newest process died.
    fn wait(&mut self, name: &'static str, bound: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        loop {
            for p in &mut self.procs {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(HarnessError::Crashed {
                        name: p.name,
                        status: status.to_string(),
                        log: p.log.display().to_string(),
                        tail: tail(&p.log, 15),
                    });
                }
            }
            if ready() {
                return Ok(());
            }
            if start.elapsed() > bound {
                let log = self.procs.last().map(|p| p.log.clone()).unwrap_or_default();
                return Err(HarnessError::Timeout {
                    name,
                    seconds: bound.as_secs(),
                    log: log.display().to_string(),
                    tail: tail(&log, 15),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The apiserver URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin (`system:masters`) kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Runs the real `kubectl` as admin; panics with its message on failure; returns stdout.
    #[allow(clippy::unwrap_used, clippy::panic)]
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(crate::peer("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes a kubeconfig for `user` in `groups`, with a fresh client certificate signed by
    /// the cluster CA. RBAC decides what it may do.
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let credentials = format!(
            "client-certificate-data: {}\n    client-key-data: {}",
            b64(&cert.pem()),
            b64(&key.serialize_pem()),
        );
        self.write_kubeconfig(user, &credentials, None)
    }

    /// Writes a kubeconfig (mode 0600: it holds a credential) for this control plane that
    /// authenticates `user` with `credentials` (the `user:` fields, one per line, indented for
    /// that block), in `namespace` by default.
    fn write_kubeconfig(&self, user: &str, credentials: &str, namespace: Option<&str>) -> Result<PathBuf> {
        let namespace = namespace
            .map(|n| format!("    namespace: {n}\n"))
            .unwrap_or_default();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    {credentials}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n{namespace}current-context: test\n",
            self.server,
            b64(&self.ca_pem),
        );
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = self
            .dir
            .path()
            .join(format!("{safe}-{}.kubeconfig", rand::random::<u32>()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        io(
            format!("writing {}", path.display()),
            opts.open(&path).and_then(|mut f| f.write_all(text.as_bytes())),
        )?;
        Ok(path)
    }

    /// A one-hour token of ServiceAccount `namespace/sa` (TokenRequest), the account created
    /// when it does not exist: what a pod running as it would hold.
    pub async fn service_account_token(&self, namespace: &str, sa: &str) -> Result<String> {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        let kerr = |e: kube::Error| HarnessError::Kube(e.to_string());
        let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(self.client().await?, namespace);
        let acct: ServiceAccount = serde_json::from_value(serde_json::json!({ "metadata": { "name": sa } }))
            .map_err(|e| HarnessError::Kube(e.to_string()))?;
        match sas.create(&Default::default(), &acct).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(kerr(e)),
        }
        let req: TokenRequest =
            serde_json::from_value(serde_json::json!({ "spec": { "expirationSeconds": 3600 } }))
                .map_err(|e| HarnessError::Kube(e.to_string()))?;
        sas.create_token_request(sa, &Default::default(), &req)
            .await
            .map_err(kerr)?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| HarnessError::Kube("TokenRequest returned no token".into()))
    }

    /// Writes a kubeconfig (mode 0600) that authenticates as ServiceAccount `namespace/sa`
    /// with a token of [`ControlPlane::service_account_token`]: RBAC then judges it as the
    /// pod it stands for.
    pub async fn kubeconfig_for_service_account(&self, namespace: &str, sa: &str) -> Result<PathBuf> {
        let token = self.service_account_token(namespace, sa).await?;
        self.write_kubeconfig(
            &format!("system:serviceaccount:{namespace}:{sa}"),
            &format!("token: {token}"),
            Some(namespace),
        )
    }

    /// A client with admin rights.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.admin_kubeconfig).await
    }

    /// A client for `user` in `groups` (see [`ControlPlane::kubeconfig_as`]).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<kube::Client> {
        let path = self.kubeconfig_as(user, groups)?;
        client_from(&path).await
    }

    /// Creates a fresh namespace `lockstep-test-<prefix>-<random>`, labelled for cleanup.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        use k8s_openapi::api::core::v1::Namespace;
        let client = self.client().await?;
        let name = format!("lockstep-test-{prefix}-{:08x}", rand::random::<u32>());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "lockstep.dev/test": "true" } }
        }))
        .map_err(|e| HarnessError::Kube(e.to_string()))?;
        kube::Api::<Namespace>::all(client)
            .create(&kube::api::PostParams::default(), &ns)
            .await
            .map_err(|e| HarnessError::Kube(e.to_string()))?;
        Ok(name)
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Installs aws-lc-rs as the process' rustls provider (once; later calls are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

async fn client_from(path: &Path) -> Result<kube::Client> {
    install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| HarnessError::Kube(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| HarnessError::Kube(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| HarnessError::Kube(e.to_string()))
}

pub(crate) fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Result<Proc> {
    let log = dir.join(format!("{name}.log"));
    let out = io(format!("creating {}", log.display()), std::fs::File::create(&log))?;
    let err = io("duplicating the log handle", out.try_clone())?;
    let child = io(
        format!("starting {name}"),
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn(),
    )?;
    watchdog(child.id(), dir);
    Ok(Proc { name, child, log })
}

/// Stops `pid` (and removes `dir`) once this test process is gone, even if it never dropped
/// the control plane: statics are never dropped, and a killed test runs no destructor.
fn watchdog(pid: u32, dir: &Path) {
    let script = r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done; kill "$1" 2>/dev/null; sleep 3; kill -9 "$1" 2>/dev/null; rm -rf "$2""#;
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

pub(crate) fn tcp_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

fn etcd_healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// `GET /readyz` with the admin identity, on a throwaway runtime (this runs before any test's
/// runtime exists, or inside one).
fn readyz(kubeconfig: &Path) -> bool {
    let path = kubeconfig.to_path_buf();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return false;
        };
        rt.block_on(async {
            let Ok(client) = client_from(&path).await else {
                return false;
            };
            let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
                return false;
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await,
                Ok(Ok(body)) if body.trim() == "ok"
            )
        })
    })
    .join()
    .unwrap_or(false)
}

/// Applies every CustomResourceDefinition in a YAML file (server-side, as `lockstep-test`) and
/// waits until each is established.
#[allow(clippy::unwrap_used, clippy::panic)]
pub async fn apply_crds(client: &kube::Client, file: &Path) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let text = std::fs::read_to_string(file).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in lockstep_formats::yaml::load_documents(&text).unwrap() {
        let crd: CustomResourceDefinition =
            serde_json::from_value(lockstep_formats::sops::stores::to_json(&doc).unwrap()).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("lockstep-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(
                crds.clone(),
                &name,
                kube::runtime::wait::conditions::is_crd_established(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    }
}
