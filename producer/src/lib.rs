//! The Sluice producer client: batches records per partition, pipelines
//! produce requests and retries idempotently. Built on `sluice-protocol`;
//! the client lands with its own issue (producer client crate).
