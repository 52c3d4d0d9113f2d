//! Part of `tests/node_resp.rs`.

#[allow(unused_imports)]
use super::*;
