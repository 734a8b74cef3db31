//! REST API (contract §5), `/metrics` and the admin page at `/socket`.
//! Answers from the shard that accepted the request; views that need every
//! shard gather through the mailbox.

use std::rc::Rc;

use shards::rt::TcpStream;

use crate::http::{self, Request};
use crate::server::{reply, ShardCtx};

pub async fn serve(
    ctx: &Rc<ShardCtx>,
    stream: TcpStream,
    buf: Vec<u8>,
    req: Request,
) -> Option<(TcpStream, Vec<u8>)> {
    let cors = ctx.cfg.cors_allow(req.origin.as_deref());
    let body = b"{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}";
    let resp = http::response(404, "application/json", body, cors.as_deref(), false, &[]);
    reply(stream, buf, 0, false, resp).await
}
