//! Error reports, one line each, for conditions, Events and logs. Every error of this crate
//! says everything useful in its `Display` (causes included, in these words) and keeps its cause
//! typed as its `source`.

/// An error with its causes, `outer: inner: ...`, each cause once (an outer message that
/// already quotes its cause does not repeat it; gix's outer messages alone say little, e.g.
/// "Transport handshake failed").
pub fn chain(e: &dyn std::error::Error) -> String {
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

/// What the API server said, short: its message and code for a refusal (`secrets "x" is
/// forbidden: ... (403)`), the client's own words otherwise.
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner: {0}")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn causes_are_listed_once() {
        let io = std::io::Error::other("disk gone");
        let e = Outer(Inner(io));
        // Inner quotes its cause, so the io error is not repeated.
        assert_eq!(chain(&e), "outer: inner: disk gone");
    }
}
