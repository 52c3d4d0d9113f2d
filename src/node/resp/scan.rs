//! `SCAN`: iterating a bucket's keys in token order over the RESP port.

use bytes::Bytes;

use super::commands::{Ctx, Session};
use super::frame::Value;

/// `SCAN cursor [MATCH pattern] [COUNT n]` in the session's bucket.
pub(super) async fn scan(_ctx: &Ctx, _s: &mut Session, _args: &[Bytes]) -> Result<Value, Value> {
    Err(Value::err(
        "unsupported command 'scan': iterating keys needs a range-scan op that ringkv does not \
         have yet",
    ))
}
