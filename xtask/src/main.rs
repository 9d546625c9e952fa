//! Project automation (`cargo xtask ...`): installs the real peers, runs the test suite.
fn main() {}
