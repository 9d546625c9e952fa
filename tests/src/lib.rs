//! Shared helpers for the test suites: locating the real peers (`sops`, `age`, ...).
