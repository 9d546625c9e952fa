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

/// The files of one revision under the Sync's path.
#[derive(Debug)]
pub struct Revision {
    /// The commit id (hex).
    pub commit: String,
    /// File path (relative to the Sync's path) → content.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Where Git caches live: one bare repository per URL under `dir`.
#[derive(Clone, Debug)]
pub struct GitCache {
    dir: PathBuf,
}

impl GitCache {
    /// A cache rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn repo_dir(&self, url: &str) -> PathBuf {
        use sha2::Digest;
        let h = sha2::Sha256::digest(url.as_bytes());
        self.dir.join(hex::encode(&h[..12]))
    }

    /// Fetches `branch` (depth 1) and returns the files under `path` at its head.
    pub fn fetch(&self, url: &str, branch: &str, path: &str) -> Result<Revision, Error> {
        let fetch_err = |m: String| Error::Fetch {
            url: url.into(),
            branch: branch.into(),
            message: m,
        };
        let dir = self.repo_dir(url);
        let interrupt = AtomicBool::new(false);
        let depth = Shallow::DepthAtRemote(std::num::NonZeroU32::MIN);
        let repo = if dir.join("HEAD").is_file() {
            gix::open(&dir).map_err(|e| fetch_err(e.to_string()))?
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| fetch_err(e.to_string()))?;
            gix::init_bare(&dir).map_err(|e| fetch_err(e.to_string()))?
        };
        // Only the one branch, into its remote-tracking ref, one commit deep.
        let spec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        let remote = repo
            .remote_at(url)
            .map_err(|e| fetch_err(e.to_string()))?
            .with_refspecs(Some(spec.as_str()), Direction::Fetch)
            .map_err(|e| fetch_err(e.to_string()))?;
        remote
            .connect(Direction::Fetch)
            .map_err(|e| fetch_err(e.to_string()))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| fetch_err(e.to_string()))?
            .with_shallow(depth)
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|e| fetch_err(e.to_string()))?;
        let missing = |m: String| Error::Missing {
            url: url.into(),
            message: m,
        };
        let id = repo
            .find_reference(format!("refs/remotes/origin/{branch}").as_str())
            .map_err(|_| missing(format!("branch `{branch}` not found")))?
            .peel_to_id()
            .map_err(|e| missing(e.to_string()))?
            .detach();
        let commit = repo.find_commit(id).map_err(|e| missing(e.to_string()))?;
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
