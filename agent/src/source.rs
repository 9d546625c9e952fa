//! Source: a shallow fetch of one branch with gix into a bare cache repository, then the files
//! under the Sync's path read straight from the object database (no worktree).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::remote::Direction;
use gix::remote::fetch::Shallow;

/// Errors of the source step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fetching failed.
    #[error("fetching {url} (branch {branch}): {message}")]
    Fetch {
        /// The repository URL.
        url: String,
        /// The branch.
        branch: String,
        /// What went wrong.
        message: String,
    },
    /// The branch or path does not exist at the fetched commit.
    #[error("{url}: {message}")]
    Missing {
        /// The repository URL.
        url: String,
        /// What is missing.
        message: String,
    },
}

/// Credentials for a repository, from the Sync's `spec.source.secretRef` (Flux's keys:
/// `username` + `password`, or `bearerToken`). Values are wiped on drop and never printed.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// HTTP basic authentication (also a token as the password, as GitHub and GitLab take it).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: zeroize::Zeroizing<String>,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(zeroize::Zeroizing<String>),
    /// An SSH private key (`identity`, optionally protected by `password`) and the host keys
    /// to trust (`known_hosts`), as Flux takes them.
    Ssh {
        /// The private key, OpenSSH or PEM.
        identity: zeroize::Zeroizing<Vec<u8>>,
        /// The key's passphrase, if it has one.
        passphrase: Option<zeroize::Zeroizing<String>>,
        /// `known_hosts` lines; host keys are always checked.
        known_hosts: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Basic { .. } => "Basic(<redacted>)",
            Credentials::Bearer(_) => "Bearer(<redacted>)",
            Credentials::Ssh { .. } => "Ssh(<redacted>)",
        })
    }
}

/// An error with its causes, `outer: inner: ...` (gix's outer messages alone say little, e.g.
/// "Transport handshake failed").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = c.source();
    }
    out
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

/// What to check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The head of a branch.
    Branch(String),
    /// A tag (annotated or light).
    Tag(String),
    /// The highest tag matching a semver range (`>=1.2.0, <2`, `~1.4`); a `v` prefix is allowed.
    Semver(String),
    /// A commit id (full hex).
    Commit(String),
}

impl Reference {
    /// The name shown in revisions: `main`, `v1.2.3`, ...
    pub fn display(&self) -> &str {
        match self {
            Reference::Branch(s) | Reference::Tag(s) | Reference::Semver(s) | Reference::Commit(s) => s,
        }
    }
}

/// The files of one revision under the Sync's path.
#[derive(Debug)]
pub struct Revision {
    /// The commit id (hex).
    pub commit: String,
    /// The ref it was resolved from (the chosen tag for a semver range).
    pub reference: String,
    /// File path (relative to the Sync's path) → content.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Where Git caches live: one bare repository per URL under `dir`. Fetches of one URL are
/// serialised (two Syncs of one repository share its cache).
#[derive(Clone, Debug)]
pub struct GitCache {
    dir: PathBuf,
    locks: std::sync::Arc<std::sync::Mutex<BTreeMap<PathBuf, std::sync::Arc<std::sync::Mutex<()>>>>>,
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

    /// Fetches a branch's head (depth 1) and returns the files under `path`.
    pub fn fetch(&self, url: &str, branch: &str, path: &str) -> Result<Revision, Error> {
        self.fetch_ref(url, &Reference::Branch(branch.to_owned()), path)
    }

    /// Fetches `reference` (shallow where the protocol allows) and returns the files under `path`.
    pub fn fetch_ref(&self, url: &str, reference: &Reference, path: &str) -> Result<Revision, Error> {
        self.fetch_with(url, reference, path, &Credentials::None, None)
    }

    /// [`GitCache::fetch_ref`] with credentials.
    pub fn fetch_with(
        &self,
        url: &str,
        reference: &Reference,
        path: &str,
        credentials: &Credentials,
        ca_pem: Option<&[u8]>,
    ) -> Result<Revision, Error> {
        let branch = reference.display();
        let shown = display_url(url);
        let fetch_err = |m: String| Error::Fetch {
            url: shown.clone(),
            branch: branch.into(),
            message: m,
        };
        let dir = self.repo_dir(url);
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(dir.clone()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let interrupt = AtomicBool::new(false);
        let mut repo = if dir.join("HEAD").is_file() {
            gix::open(&dir).map_err(|e| fetch_err(chain(&e)))?
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| fetch_err(chain(&e)))?;
            gix::init_bare(&dir).map_err(|e| fetch_err(chain(&e)))?
        };
        // Lives until the fetch is done: the agent holding the key.
        let ssh = match credentials {
            Credentials::Ssh {
                identity,
                passphrase,
                known_hosts,
            } => {
                let session = crate::ssh::Session::start(
                    &self.dir.join("ssh"),
                    identity,
                    passphrase.as_ref().map(|p| p.as_str()),
                    known_hosts,
                )
                .map_err(|m| fetch_err(format!("spec.source.secretRef: {m}")))?;
                let mut config = repo.config_snapshot_mut();
                config
                    .set_value(&gix::config::tree::Core::SSH_COMMAND, session.ssh_command())
                    .and_then(|_| config.set_value(&gix::config::tree::Ssh::VARIANT, "ssh"))
                    .map_err(|e| fetch_err(chain(&e)))?;
                config.commit().map_err(|e| fetch_err(chain(&e)))?;
                Some(session)
            }
            _ => None,
        };
        // gix sees a closed connection; ssh's own words say why.
        let net_err = |m: String| match ssh.as_ref().and_then(crate::ssh::Session::diagnostics) {
            Some(d) => fetch_err(format!("ssh: {d} ({m})")),
            None => fetch_err(m),
        };
        let (spec, shallow) = match reference {
            // Only the one ref, one commit deep.
            Reference::Branch(b) => (format!("+refs/heads/{b}:refs/remotes/origin/{b}"), true),
            Reference::Tag(t) => (format!("+refs/tags/{t}:refs/tags/{t}"), true),
            Reference::Semver(_) => ("+refs/tags/*:refs/tags/*".to_owned(), true),
            // Any commit of any branch: full history of the heads.
            Reference::Commit(_) => ("+refs/heads/*:refs/remotes/origin/*".to_owned(), false),
        };
        let remote = repo
            .remote_at(url)
            .map_err(|e| net_err(chain(&e)))?
            .with_refspecs(Some(spec.as_str()), Direction::Fetch)
            .map_err(|e| net_err(chain(&e)))?;
        let mut connection = remote.connect(Direction::Fetch).map_err(|e| net_err(chain(&e)))?;
        match credentials {
            Credentials::None => {}
            Credentials::Basic { username, password } => {
                let (username, password) = (username.clone(), password.clone());
                connection = connection.with_credentials(move |action| match action {
                    gix::credentials::helper::Action::Get(ctx) => {
                        Ok(Some(gix::credentials::protocol::Outcome {
                            identity: gix::sec::identity::Account {
                                username: username.clone(),
                                password: password.to_string(),
                                oauth_refresh_token: None,
                            },
                            next: ctx.into(),
                        }))
                    }
                    _ => Ok(None),
                });
            }
            Credentials::Bearer(_) | Credentials::Ssh { .. } => {}
        }
        let mut http = gix::protocol::transport::client::blocking_io::http::Options::default();
        if let Credentials::Bearer(token) = credentials {
            http.extra_headers
                .push(format!("Authorization: Bearer {}", token.as_str()));
        }
        if let Some(pem) = ca_pem {
            // A private CA (the `ca.crt` entry), trusted beside the platform's roots.
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| fetch_err(format!("ca.crt: {e}")))?;
            let backend = gix::protocol::transport::client::blocking_io::http::reqwest::Options {
                configure_client: Some(Box::new(move |b| Ok(b.tls_certs_merge(certs.clone())))),
                ..Default::default()
            };
            http.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
        }
        if http.backend.is_some() || !http.extra_headers.is_empty() {
            connection = connection.with_transport_options(Box::new(http));
        }
        let prepared = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| net_err(chain(&e)))?;
        let prepared = if shallow {
            prepared.with_shallow(Shallow::DepthAtRemote(std::num::NonZeroU32::MIN))
        } else if repo.is_shallow().unwrap_or(false) {
            prepared.with_shallow(Shallow::undo())
        } else {
            prepared
        };
        prepared
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|e| net_err(chain(&e)))?;
        let missing = |m: String| Error::Missing {
            url: shown.clone(),
            message: m,
        };
        let peel = |name: &str| -> Result<gix::ObjectId, Error> {
            repo.find_reference(name)
                .map_err(|_| missing(format!("`{}` not found", name.rsplit('/').next().unwrap_or(name))))?
                .peel_to_id()
                .map(|id| id.detach())
                .map_err(|e| missing(e.to_string()))
        };
        let (id, resolved) = match reference {
            Reference::Branch(b) => (peel(&format!("refs/remotes/origin/{b}"))?, b.clone()),
            Reference::Tag(t) => (peel(&format!("refs/tags/{t}"))?, t.clone()),
            Reference::Semver(range) => {
                let req = semver::VersionReq::parse(range)
                    .map_err(|e| missing(format!("invalid semver range `{range}`: {e}")))?;
                let tags = repo.references().map_err(|e| missing(e.to_string()))?;
                let best = tags
                    .tags()
                    .map_err(|e| missing(e.to_string()))?
                    .filter_map(Result::ok)
                    .filter_map(|r| {
                        let name = r.name().shorten().to_string();
                        let v = semver::Version::parse(name.strip_prefix('v').unwrap_or(&name)).ok()?;
                        req.matches(&v).then_some((v, name))
                    })
                    .max_by(|a, b| a.0.cmp(&b.0))
                    .ok_or_else(|| missing(format!("no tag matches semver range `{range}`")))?;
                (peel(&format!("refs/tags/{}", best.1))?, best.1)
            }
            Reference::Commit(c) => {
                let id = gix::ObjectId::from_hex(c.as_bytes())
                    .map_err(|_| missing(format!("`{c}` is not a full commit id")))?;
                (id, c.clone())
            }
        };
        let commit = repo
            .find_commit(id)
            .map_err(|_| missing(format!("commit {id} not found")))?;
        let mut tree = commit.tree().map_err(|e| missing(e.to_string()))?;
        let path = path.trim_matches('/');
        if !path.is_empty() && path != "." {
            let entry = tree
                .peel_to_entry_by_path(Path::new(path))
                .map_err(|e| missing(e.to_string()))?
                .ok_or_else(|| missing(format!("path `{path}` does not exist at {id}")))?;
            tree = entry
                .object()
                .map_err(|e| missing(e.to_string()))?
                .try_into_tree()
                .map_err(|_| missing(format!("path `{path}` is not a directory")))?;
        }
        let mut files = BTreeMap::new();
        walk(&repo, &tree, "", &mut files).map_err(missing)?;
        Ok(Revision {
            commit: id.to_string(),
            reference: resolved,
            files,
        })
    }
}

fn walk(
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    prefix: &str,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), String> {
    for entry in tree.iter() {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = format!("{prefix}{}", entry.filename());
        let obj = repo.find_object(entry.oid()).map_err(|e| e.to_string())?;
        if entry.mode().is_tree() {
            let sub = obj.try_into_tree().map_err(|e| e.to_string())?;
            walk(repo, &sub, &format!("{name}/"), out)?;
        } else if entry.mode().is_blob() {
            out.insert(name, obj.data.clone());
        }
    }
    Ok(())
}
