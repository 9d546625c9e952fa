//! Source: a shallow fetch of one reference with gix into a bare cache repository, then the
//! files under the Sync's path read straight from the object database (no worktree).
//!
//! [`GitCache::fetch_with`] is the step, as a list of smaller ones: lock the cache of the URL,
//! open it, start an SSH agent when the credentials are a key, connect with the credentials and
//! CA, receive the pack ([`refs::refspec`] decides what to ask for), resolve the reference
//! ([`refs::pick_semver`] for a range), and read the tree under the path.

pub mod chart_index;
pub mod charts;
pub mod credentials;
pub mod oci;
pub mod refs;
pub mod semver_range;
pub mod ssh;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::remote::Direction;
use gix::remote::fetch::Shallow;

pub use credentials::{Credentials, credentials_from};
pub use refs::Reference;

use crate::errors::chain;

/// A boxed cause (gix has one error type per call).
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the source step; each names the URL (without credentials) and the reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening the cache, connecting, negotiating or receiving failed.
    #[error("fetching {url} ({reference}): {}{}", ssh_note(.ssh.as_deref()), chain(.source.as_ref()))]
    Fetch {
        /// The repository URL.
        url: String,
        /// `branch main`, `tag v1.2.3`, ...
        reference: String,
        /// What `ssh` itself said, when the transport was SSH.
        ssh: Option<String>,
        /// The cause.
        #[source]
        source: Cause,
    },
    /// The SSH identity could not be loaded into the fetch's agent.
    #[error("fetching {url} ({reference}): spec.source.secretRef: {source}")]
    SshIdentity {
        /// The repository URL.
        url: String,
        /// The reference.
        reference: String,
        /// Why (never the key).
        #[source]
        source: ssh::Error,
    },
    /// The private CA (`ca.crt`) does not parse.
    #[error("fetching {url} ({reference}): ca.crt: {source}")]
    Ca {
        /// The repository URL.
        url: String,
        /// The reference.
        reference: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The reference, commit or path does not exist at the fetched commit.
    #[error("{url}: {message}")]
    Missing {
        /// The repository URL.
        url: String,
        /// What is missing.
        message: String,
    },
    /// Reading the fetched objects failed.
    #[error("{url}: reading the fetched tree: {}", chain(.source.as_ref()))]
    Read {
        /// The repository URL.
        url: String,
        /// The cause.
        #[source]
        source: Cause,
    },
}

fn ssh_note(ssh: Option<&str>) -> String {
    ssh.map(|d| format!("ssh: {d}: ")).unwrap_or_default()
}

/// A URL as it may be shown: any user information (`user:password@`) removed.
pub fn display_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The files of one revision: the whole repository (a kustomization under the Sync's path may
/// reach anywhere in it), and the Sync's path.
#[derive(Debug)]
pub struct Revision {
    /// The commit id (hex).
    pub commit: String,
    /// The ref it was resolved from (the chosen tag for a semver range).
    pub reference: String,
    /// The Sync's path in the repository (`/`-separated, no leading or trailing `/`; empty for
    /// the root).
    pub path: String,
    /// Repository-relative file path → content.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Revision {
    /// `reference@sha1:commit`, as revisions are shown in status.
    pub fn revision(&self) -> String {
        revision(&self.reference, &self.commit)
    }
}

/// `reference@sha1:commit`, as revisions are shown in status.
pub fn revision(reference: &str, commit: &str) -> String {
    format!("{reference}@sha1:{commit}")
}

/// Where Git caches live: one bare repository per URL under `dir`. Fetches of one URL are
/// serialised (two Syncs of one repository share its cache).
#[derive(Clone, Debug)]
pub struct GitCache {
    dir: PathBuf,
    locks: std::sync::Arc<std::sync::Mutex<BTreeMap<PathBuf, std::sync::Arc<std::sync::Mutex<()>>>>>,
}

/// One fetch in progress: the URL as shown, the reference, and the SSH session if any, for
/// errors.
struct Fetching<'a> {
    url: String,
    reference: &'a Reference,
    ssh: Option<ssh::Session>,
}

impl Fetching<'_> {
    fn what(&self) -> String {
        let kind = match self.reference {
            Reference::Branch(_) => "branch",
            Reference::Tag(_) => "tag",
            Reference::Semver(_) => "semver",
            Reference::Commit(_) => "commit",
            Reference::Head => "ref",
        };
        format!("{kind} {}", self.reference.display())
    }

    /// A failure of the fetch; over SSH with what `ssh` said (gix only sees a closed
    /// connection).
    fn failed(&self, e: impl Into<Cause>) -> Error {
        Error::Fetch {
            url: self.url.clone(),
            reference: self.what(),
            ssh: self.ssh.as_ref().and_then(ssh::Session::diagnostics),
            source: e.into(),
        }
    }

    fn missing(&self, message: String) -> Error {
        Error::Missing {
            url: self.url.clone(),
            message,
        }
    }

    fn read(&self, e: impl Into<Cause>) -> Error {
        Error::Read {
            url: self.url.clone(),
            source: e.into(),
        }
    }
}

impl GitCache {
    /// A cache rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            locks: Default::default(),
        }
    }

    fn repo_dir(&self, url: &str) -> PathBuf {
        use sha2::Digest;
        let h = sha2::Sha256::digest(url.as_bytes());
        self.dir.join(hex::encode(&h[..12]))
    }

    /// The lock of one cache directory.
    fn lock(&self, dir: &Path) -> std::sync::Arc<std::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(dir.to_path_buf()).or_default().clone()
    }

    /// Fetches a branch's head (depth 1) and returns the files under `path`.
    pub fn fetch(&self, url: &str, branch: &str, path: &str) -> Result<Revision, Error> {
        self.fetch_ref(url, &Reference::Branch(branch.to_owned()), path)
    }

    /// Fetches `reference` (shallow where the protocol allows) and returns the files under `path`.
    pub fn fetch_ref(&self, url: &str, reference: &Reference, path: &str) -> Result<Revision, Error> {
        self.fetch_with(url, reference, path, &Credentials::None, None)
    }

    /// [`GitCache::fetch_ref`] with credentials and a private CA.
    pub fn fetch_with(
        &self,
        url: &str,
        reference: &Reference,
        path: &str,
        credentials: &Credentials,
        ca_pem: Option<&[u8]>,
    ) -> Result<Revision, Error> {
        let mut f = Fetching {
            url: display_url(url),
            reference,
            ssh: None,
        };
        let dir = self.repo_dir(url);
        let lock = self.lock(&dir);
        let _guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut repo = open_cache(&dir).map_err(|e| f.failed(e))?;
        // Lives until the fetch is done: the agent holding the key.
        f.ssh = self.ssh_session(&f, &mut repo, credentials)?;
        receive(&f, &repo, url, credentials, ca_pem)?;
        let (id, resolved) = resolve(&f, &repo)?;
        let (path, files) = read_tree(&f, &repo, id, path)?;
        Ok(Revision {
            commit: id.to_string(),
            reference: resolved,
            path,
            files,
        })
    }

    /// For an SSH key: an agent holding it, and the cache configured to use it.
    fn ssh_session(
        &self,
        f: &Fetching<'_>,
        repo: &mut gix::Repository,
        credentials: &Credentials,
    ) -> Result<Option<ssh::Session>, Error> {
        let Credentials::Ssh {
            identity,
            passphrase,
            known_hosts,
        } = credentials
        else {
            return Ok(None);
        };
        let session = ssh::Session::start(
            &self.dir.join("ssh"),
            identity,
            passphrase.as_ref().map(|p| p.as_str()),
            known_hosts,
        )
        .map_err(|source| Error::SshIdentity {
            url: f.url.clone(),
            reference: f.what(),
            source,
        })?;
        let mut config = repo.config_snapshot_mut();
        config
            .set_value(&gix::config::tree::Core::SSH_COMMAND, session.ssh_command())
            .and_then(|_| config.set_value(&gix::config::tree::Ssh::VARIANT, "ssh"))
            .map_err(|e| f.failed(e))?;
        config.commit().map_err(|e| f.failed(e))?;
        Ok(Some(session))
    }
}

/// The bare cache repository in `dir`, made on first use.
fn open_cache(dir: &Path) -> Result<gix::Repository, Cause> {
    if dir.join("HEAD").is_file() {
        Ok(gix::open(dir)?)
    } else {
        std::fs::create_dir_all(dir)?;
        Ok(gix::init_bare(dir)?)
    }
}

/// gix's HTTP options for the credentials and CA: a bearer token header, a private CA trusted
/// beside the platform's roots. `None` when neither is needed.
fn http_options(
    f: &Fetching<'_>,
    credentials: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<Option<gix::protocol::transport::client::blocking_io::http::Options>, Error> {
    let mut http = gix::protocol::transport::client::blocking_io::http::Options::default();
    if let Credentials::Bearer(token) = credentials {
        http.extra_headers
            .push(format!("Authorization: Bearer {}", token.as_str()));
    }
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|source| Error::Ca {
            url: f.url.clone(),
            reference: f.what(),
            source,
        })?;
        let backend = gix::protocol::transport::client::blocking_io::http::reqwest::Options {
            configure_client: Some(Box::new(move |b| Ok(b.tls_certs_merge(certs.clone())))),
            ..Default::default()
        };
        http.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
    }
    Ok((http.backend.is_some() || !http.extra_headers.is_empty()).then_some(http))
}

/// Connects with the credentials and receives what [`refs::refspec`] asks for.
fn receive(
    f: &Fetching<'_>,
    repo: &gix::Repository,
    url: &str,
    credentials: &Credentials,
    ca_pem: Option<&[u8]>,
) -> Result<(), Error> {
    let spec = refs::refspec(f.reference);
    let remote = repo
        .remote_at(url)
        .map_err(|e| f.failed(e))?
        .with_refspecs(Some(spec.spec.as_str()), Direction::Fetch)
        .map_err(|e| f.failed(e))?;
    let mut connection = remote.connect(Direction::Fetch).map_err(|e| f.failed(e))?;
    if let Credentials::Basic { username, password } = credentials {
        let (username, password) = (username.clone(), password.clone());
        connection = connection.with_credentials(move |action| match action {
            gix::credentials::helper::Action::Get(ctx) => Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: username.clone(),
                    password: password.to_string(),
                    oauth_refresh_token: None,
                },
                next: ctx.into(),
            })),
            _ => Ok(None),
        });
    }
    if let Some(http) = http_options(f, credentials, ca_pem)? {
        connection = connection.with_transport_options(Box::new(http));
    }
    let prepared = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| f.failed(e))?;
    let prepared = if spec.shallow {
        prepared.with_shallow(Shallow::DepthAtRemote(std::num::NonZeroU32::MIN))
    } else if repo.is_shallow().unwrap_or(false) {
        prepared.with_shallow(Shallow::undo())
    } else {
        prepared
    };
    let interrupt = AtomicBool::new(false);
    prepared
        .receive(gix::progress::Discard, &interrupt)
        .map_err(|e| f.failed(e))?;
    Ok(())
}

/// The commit the reference names now, and the ref it came from.
fn resolve(f: &Fetching<'_>, repo: &gix::Repository) -> Result<(gix::ObjectId, String), Error> {
    let peel = |name: &str| -> Result<gix::ObjectId, Error> {
        repo.find_reference(name)
            .map_err(|_| f.missing(format!("`{}` not found", name.rsplit('/').next().unwrap_or(name))))?
            .peel_to_id()
            .map(|id| id.detach())
            .map_err(|e| f.missing(e.to_string()))
    };
    match f.reference {
        Reference::Branch(name) | Reference::Tag(name) => {
            let local = refs::local_ref(f.reference).unwrap_or_default();
            Ok((peel(&local)?, name.clone()))
        }
        Reference::Head => Ok((peel("refs/remotes/origin/HEAD")?, "HEAD".into())),
        Reference::Semver(range) => {
            let tags: Vec<String> = repo
                .references()
                .map_err(|e| f.read(e))?
                .tags()
                .map_err(|e| f.read(e))?
                .filter_map(Result::ok)
                .map(|r| r.name().shorten().to_string())
                .collect();
            let best = refs::pick_semver(range, tags.iter().map(String::as_str))
                .map_err(|e| f.missing(e.to_string()))?;
            Ok((peel(&format!("refs/tags/{best}"))?, best.to_owned()))
        }
        Reference::Commit(c) => {
            let id = gix::ObjectId::from_hex(c.as_bytes())
                .map_err(|_| f.missing(format!("`{c}` is not a full commit id")))?;
            Ok((id, c.clone()))
        }
    }
}

/// The Sync's `path` (normalised) and every file of commit `id`; `path` must be a directory.
fn read_tree(
    f: &Fetching<'_>,
    repo: &gix::Repository,
    id: gix::ObjectId,
    path: &str,
) -> Result<(String, BTreeMap<String, Vec<u8>>), Error> {
    let commit = repo
        .find_commit(id)
        .map_err(|_| f.missing(format!("commit {id} not found")))?;
    let tree = commit.tree().map_err(|e| f.read(e))?;
    let path = normalize(path);
    if !path.is_empty() {
        let entry = tree
            .clone()
            .peel_to_entry_by_path(Path::new(&path))
            .map_err(|e| f.read(e))?
            .ok_or_else(|| f.missing(format!("path `{path}` does not exist at {id}")))?;
        if !entry.mode().is_tree() {
            return Err(f.missing(format!("path `{path}` is not a directory")));
        }
    }
    let mut files = BTreeMap::new();
    walk(repo, &tree, "", &mut files).map_err(|e| f.read(e))?;
    Ok((path, files))
}

/// A Sync's path as the repository's files are keyed: `./a//b/` → `a/b`, `.` → the root.
pub fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn walk(
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    prefix: &str,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), Cause> {
    for entry in tree.iter() {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.filename());
        let obj = repo.find_object(entry.oid())?;
        if entry.mode().is_tree() {
            let sub = obj.try_into_tree()?;
            walk(repo, &sub, &format!("{name}/"), out)?;
        } else if entry.mode().is_blob() {
            out.insert(name, obj.data.clone());
        }
    }
    Ok(())
}
