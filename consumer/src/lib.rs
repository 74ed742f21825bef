//! The Sluice consumer client: consumer groups, fetch with prefetch, and
//! commits that only move when the application has processed records.
//! Built on `sluice-protocol`; the client lands with its own issue.
