//! What a fetch asks the remote for, and which of the fetched refs it checks out (pure).

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
    /// The remote's `HEAD` (its default branch), as Argo CD's `targetRevision: HEAD`.
    Head,
}

impl Reference {
    /// The name shown in revisions: `main`, `v1.2.3`, ...
    pub fn display(&self) -> &str {
        match self {
            Reference::Branch(s) | Reference::Tag(s) | Reference::Semver(s) | Reference::Commit(s) => s,
            Reference::Head => "HEAD",
        }
    }
}

/// The fetch a reference needs: one refspec, and whether one commit of depth is enough.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refspec {
    /// The refspec (`+refs/heads/main:refs/remotes/origin/main`).
    pub spec: String,
    /// Whether a shallow fetch (depth 1) has what the reference needs.
    pub shallow: bool,
}

/// The refspec of `reference`: only its ref, one commit deep; every tag for a semver range;
/// the full history of every branch for a commit (it may be on any of them, at any depth).
pub fn refspec(reference: &Reference) -> Refspec {
    let (spec, shallow) = match reference {
        Reference::Branch(b) => (format!("+refs/heads/{b}:refs/remotes/origin/{b}"), true),
        Reference::Tag(t) => (format!("+refs/tags/{t}:refs/tags/{t}"), true),
        Reference::Semver(_) => ("+refs/tags/*:refs/tags/*".to_owned(), true),
        Reference::Commit(_) => ("+refs/heads/*:refs/remotes/origin/*".to_owned(), false),
        Reference::Head => ("+HEAD:refs/remotes/origin/HEAD".to_owned(), true),
    };
    Refspec { spec, shallow }
}

/// The local ref a fetched branch or tag lands in (`None` for semver ranges and commits,
/// which are resolved otherwise).
pub fn local_ref(reference: &Reference) -> Option<String> {
    match reference {
        Reference::Branch(b) => Some(format!("refs/remotes/origin/{b}")),
        Reference::Tag(t) => Some(format!("refs/tags/{t}")),
        Reference::Head => Some("refs/remotes/origin/HEAD".into()),
        Reference::Semver(_) | Reference::Commit(_) => None,
    }
}

/// Why no tag was picked for a semver range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SemverError {
    /// The range does not parse.
    #[error("invalid semver range `{range}`: {reason}")]
    Invalid {
        /// The range.
        range: String,
        /// Why.
        reason: String,
    },
    /// No tag is a version within the range.
    #[error("no tag matches semver range `{range}`")]
    NoMatch {
        /// The range.
        range: String,
    },
}

/// The highest of `tags` (short names, `v1.2.3` or `1.2.3`) within `range`, read as Flux reads
/// `ref.semver` ([`super::semver_range`]); tags that are not versions are ignored, and so are
/// pre-releases unless the range names one.
pub fn pick_semver<'a>(range: &str, tags: impl IntoIterator<Item = &'a str>) -> Result<&'a str, SemverError> {
    let req = super::semver_range::Range::parse(range).map_err(|reason| SemverError::Invalid {
        range: range.to_owned(),
        reason,
    })?;
    tags.into_iter()
        .filter_map(|name| {
            let v = super::semver_range::version(name)?;
            req.matches(&v).then_some((v, name))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, name)| name)
        .ok_or_else(|| SemverError::NoMatch {
            range: range.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_reference_fetches_only_what_it_needs() {
        let b = refspec(&Reference::Branch("main".into()));
        assert_eq!(b.spec, "+refs/heads/main:refs/remotes/origin/main");
        assert!(b.shallow);
        assert_eq!(
            refspec(&Reference::Tag("v1".into())).spec,
            "+refs/tags/v1:refs/tags/v1"
        );
        assert_eq!(
            refspec(&Reference::Semver("~1".into())).spec,
            "+refs/tags/*:refs/tags/*"
        );
        let c = refspec(&Reference::Commit("abc".into()));
        assert_eq!(c.spec, "+refs/heads/*:refs/remotes/origin/*");
        assert!(!c.shallow, "a pinned commit may be deep in any branch");
        assert_eq!(
            local_ref(&Reference::Branch("dev".into())).as_deref(),
            Some("refs/remotes/origin/dev")
        );
        assert_eq!(local_ref(&Reference::Semver("1".into())), None);
    }

    #[test]
    fn the_highest_matching_version_is_picked() {
        let tags = ["v1.2.0", "v1.10.0", "1.3.0", "v2.0.0", "latest", "v1.11.0-rc.1"];
        assert_eq!(pick_semver(">=1.2, <2", tags).unwrap(), "v1.10.0");
        assert_eq!(pick_semver("~1.3", tags).unwrap(), "1.3.0");
        assert_eq!(pick_semver("*", tags).unwrap(), "v2.0.0");
        // As Flux reads it: a bare version is exact, `||` and hyphen ranges work.
        assert_eq!(pick_semver("1.3.0", tags).unwrap(), "1.3.0");
        assert_eq!(pick_semver("1.2 - 1.3 || >=3", tags).unwrap(), "1.3.0");
        // Pre-releases only when the range asks for them.
        assert_eq!(pick_semver(">=1.11.0-rc.0, <2", tags).unwrap(), "v1.11.0-rc.1");
        assert_eq!(
            pick_semver("^3", tags).unwrap_err().to_string(),
            "no tag matches semver range `^3`"
        );
        assert!(
            pick_semver("not a range", tags)
                .unwrap_err()
                .to_string()
                .starts_with("invalid semver range `not a range`: ")
        );
    }
}
