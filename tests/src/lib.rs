//! Sluice end-to-end tests. Each test in `tests/` starts a real broker on
//! `127.0.0.1:0` (in-process, or as a subprocess where a crash must be real)
//! and talks to it only over loopback.
