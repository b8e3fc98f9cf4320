//! Messages between mounts and the server, from meaning to bytes to sockets.
//!
//! - [`msg`]: the requests and responses, as Rust values;
//! - [`wire`]: their bytes: frames, payloads and a streaming decoder
//!   (`docs/wire.md`);
//! - [`stream`]: reliable delivery, each request answered exactly once
//!   across reconnects and server changes, as state machines without I/O;
//! - [`tcp`]: the drivers that run those machines over TCP sockets.

pub mod msg;
pub mod stream;
pub mod tcp;
pub mod wire;
