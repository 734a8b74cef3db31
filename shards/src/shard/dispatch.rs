//! What a message from a peer's mailbox does on this shard: deliveries
//! and history records, interest changes, relayed fences, answers to this
//! shard's questions, and questions to answer (the application's ones in a
//! task of their own).

use std::rc::Rc;

use super::{DirectSent, Shard};
use crate::ids::ShardId;
use crate::mailbox::{Request, Response, ShardMsg};

impl Shard {
    /// Handles one message from a peer. Never awaits a send: answers go out
    /// from a spawned task.
    pub(crate) fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver { p, record } => {
                if let Some(at) = record {
                    self.record(&p, at);
                }
                self.deliver_logged(&p);
            }
            ShardMsg::Record { p, at } => self.record(&p, at),
            ShardMsg::Relay { origin, to, qid } => {
                let mailbox = self.mailbox.clone();
                let msg = ShardMsg::Request {
                    from: origin,
                    qid,
                    req: Request::Ping,
                };
                glommio::spawn_local(async move {
                    let _ = mailbox.send_to(to, msg).await;
                })
                .detach();
            }
            ShardMsg::Interest { from, topic, on } => {
                self.interest.borrow_mut().set(from, &topic, on);
            }
            ShardMsg::Response { qid, resp } => self.mailbox.replies().complete(qid, resp),
            ShardMsg::Request {
                from,
                qid,
                req: Request::App(a),
            } => {
                let handlers = self.app.borrow().clone();
                let mut msg = a;
                let mut taken = None;
                for f in handlers {
                    match f(from, msg) {
                        Ok(fut) => {
                            taken = Some(fut);
                            break;
                        }
                        Err(back) => msg = back,
                    }
                }
                let Some(fut) = taken else {
                    return;
                };
                let mailbox = self.mailbox.clone();
                glommio::spawn_local(async move {
                    let resp = Response::App(fut.await);
                    let _ = mailbox
                        .send_to(from, ShardMsg::Response { qid, resp })
                        .await;
                })
                .detach();
            }
            ShardMsg::Request {
                from,
                qid,
                req:
                    Request::Direct {
                        seq,
                        text,
                        attachments,
                    },
            } if self.moved_to(seq).is_some_and(|s| s != self.id) => {
                // Recovered on another shard: pass it on, answer with its answer.
                let there = self.moved_to(seq).unwrap_or(self.id);
                let me = self.clone();
                glommio::spawn_local(async move {
                    let sent = me.direct_to_shard(there, seq, text, attachments).await;
                    let ok = match sent {
                        DirectSent::Done(ok) => ok,
                        DirectSent::Waiting(q) => me.direct_answer(q).await,
                    };
                    let resp = Response::Delivered(ok);
                    let _ = me
                        .mailbox
                        .send_to(from, ShardMsg::Response { qid, resp })
                        .await;
                })
                .detach();
            }
            ShardMsg::Request { from, qid, req } => {
                let resp = self.answer(from, req);
                let mailbox = self.mailbox.clone();
                glommio::spawn_local(async move {
                    let _ = mailbox
                        .send_to(from, ShardMsg::Response { qid, resp })
                        .await;
                })
                .detach();
            }
            ShardMsg::Adopt { fd, buffered } => {
                if let Some(f) = &*self.adopt.borrow() {
                    f(fd, buffered);
                }
            }
        }
    }

    fn answer(&self, from: ShardId, req: Request) -> Response {
        match req {
            Request::Interest(topic) => {
                self.interest.borrow_mut().set(from, &topic, true);
                Response::Done
            }
            Request::Count(c) => Response::Count(self.channels.borrow().member_count(&c)),
            Request::Members(c) => Response::Members(self.channels.borrow().members(&c)),
            Request::Direct {
                seq,
                text,
                attachments,
            } => Response::Delivered(self.direct_local(seq, text, &attachments)),
            Request::Channels => Response::Channels(self.channels.borrow().channel_counts()),
            Request::Connections => Response::Connections(self.local_connections()),
            Request::Ping => Response::Done,
            Request::History { channel, query } => {
                Response::History(self.local_history(&channel, &query))
            }
            // Handled in `handle` (it needs a task).
            Request::App(_) => Response::Done,
        }
    }
}
