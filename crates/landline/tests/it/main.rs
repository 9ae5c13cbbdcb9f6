//! Integration tests: the mock API and real S3 servers (moto, s3s-fs) over TCP on 127.0.0.1.
//!
//! Run them through `scripts/test.sh`, which starts the S3 servers and exports their
//! addresses; a test that needs a server and finds none fails, it never skips.

mod api_faults;
mod auth;
mod aws_credentials;
mod checkpoints;
mod e2e;
mod failures;
mod formats;
mod gcs;
mod harness;
mod idempotence;
mod incremental;
mod library;
mod manifests;
mod network;
mod objects;
mod partitions;
mod proxy;
mod s3;
mod store_faults;
mod stores;
mod tls;
mod verify;
