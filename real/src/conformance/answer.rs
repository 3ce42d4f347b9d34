//! What a side answered, and the same answer as a flat list of named fields to compare.
//!
//! Every field a client can act on is compared: header revision, key-values with create and mod
//! revision, version, value and lease, more, count, deleted, succeeded, error code and message,
//! watch events, progress notifications and cancellations. Header identities (cluster, member,
//! raft term) name the server, not the data, and are left out.

use store::proto::etcdserverpb::{
    response_op, CompactionResponse, DeleteRangeResponse, PutResponse, RangeResponse,
    ResponseHeader, TxnResponse, WatchResponse,
};
use store::proto::mvccpb::{Event, KeyValue};

#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    Error {
        code: String,
        message: String,
    },
    /// The first response of a new watch.
    Created(WatchResponse),
    /// A progress notification answering a progress request.
    Progress(WatchResponse),
    /// Everything a watch delivered, gathered at the end of the sequence.
    Watch(WatchOutcome),
    /// Nothing came back in time.
    Silent(String),
    /// A lease operation's answer (`lease.rs`).
    Lease(crate::lease::LeaseReply),
}

impl Answer {
    /// A progress request that got no notification within `deadline`: what a side that defers
    /// it (a watch on the stream starts beyond the current revision) answers.
    pub fn no_progress(deadline: std::time::Duration) -> Answer {
        Answer::Silent(format!(
            "no progress notification within {} s",
            deadline.as_secs()
        ))
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchOutcome {
    pub events: Vec<Event>,
    pub cancel: Option<Cancel>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cancel {
    pub compact_revision: i64,
    pub reason: String,
}

impl Answer {
    pub fn from_status(status: &tonic::Status) -> Answer {
        Answer::Error {
            code: format!("{:?}", status.code()),
            message: status.message().to_string(),
        }
    }

    /// The answer's fields in a stable order, each as (path, value).
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut out = Fields::default();
        match self {
            Answer::Range(r) => out.range("", r),
            Answer::Put(p) => out.put("", p),
            Answer::Delete(d) => out.delete("", d),
            Answer::Txn(t) => out.txn("", t),
            Answer::Compact(c) => out.header("", &c.header),
            Answer::Error { code, message } => {
                out.push("error.code", code);
                out.push("error.message", message);
            }
            Answer::Created(w) => {
                out.push("created", w.created);
                out.push("canceled", w.canceled);
                out.push("watch_id", w.watch_id);
                out.header("", &w.header);
                out.push("compact_revision", w.compact_revision);
                out.push("cancel_reason", format!("{:?}", w.cancel_reason));
            }
            Answer::Progress(w) => {
                out.push("watch_id", w.watch_id);
                out.header("", &w.header);
                out.push("events", w.events.len());
            }
            Answer::Watch(o) => {
                // The order as one field, then each event under its revision and key, so a
                // missing or extra event shows as itself rather than shifting all that follow.
                let order: Vec<String> = o.events.iter().map(event_id).collect();
                out.push(
                    "events",
                    format!("{} [{}]", o.events.len(), order.join(", ")),
                );
                for (e, id) in o.events.iter().zip(&order) {
                    out.event(&format!("events[{id}]."), e);
                }
                match &o.cancel {
                    None => out.push("canceled", false),
                    Some(c) => {
                        out.push("canceled", true);
                        out.push("compact_revision", c.compact_revision);
                        out.push("cancel_reason", format!("{:?}", c.reason));
                    }
                }
            }
            Answer::Silent(why) => out.push("no answer", why),
            Answer::Lease(reply) => out.0.extend(reply.fields()),
        }
        out.0
    }
}

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn push(&mut self, path: impl Into<String>, value: impl ToString) {
        self.0.push((path.into(), value.to_string()));
    }

    fn header(&mut self, at: &str, h: &Option<ResponseHeader>) {
        match h {
            Some(h) => self.push(format!("{at}header.revision"), h.revision),
            None => self.push(format!("{at}header.revision"), "(no header)"),
        }
    }

    fn kv(&mut self, at: &str, kv: &KeyValue) {
        self.push(format!("{at}key"), text(&kv.key));
        self.push(format!("{at}create_revision"), kv.create_revision);
        self.push(format!("{at}mod_revision"), kv.mod_revision);
        self.push(format!("{at}version"), kv.version);
        self.push(format!("{at}value"), text(&kv.value));
        self.push(format!("{at}lease"), kv.lease);
    }

    fn prev_kv(&mut self, at: &str, kv: &Option<KeyValue>) {
        match kv {
            Some(kv) => self.kv(&format!("{at}prev_kv."), kv),
            None => self.push(format!("{at}prev_kv"), "none"),
        }
    }

    fn range(&mut self, at: &str, r: &RangeResponse) {
        self.header(at, &r.header);
        self.push(format!("{at}count"), r.count);
        self.push(format!("{at}more"), r.more);
        self.push(format!("{at}kvs"), keys(&r.kvs));
        for kv in &r.kvs {
            self.kv(&format!("{at}kvs[{}].", text(&kv.key)), kv);
        }
    }

    fn put(&mut self, at: &str, p: &PutResponse) {
        self.header(at, &p.header);
        self.prev_kv(at, &p.prev_kv);
    }

    fn delete(&mut self, at: &str, d: &DeleteRangeResponse) {
        self.header(at, &d.header);
        self.push(format!("{at}deleted"), d.deleted);
        self.push(format!("{at}prev_kvs"), keys(&d.prev_kvs));
        for kv in &d.prev_kvs {
            self.kv(&format!("{at}prev_kvs[{}].", text(&kv.key)), kv);
        }
    }

    fn txn(&mut self, at: &str, t: &TxnResponse) {
        self.header(at, &t.header);
        self.push(format!("{at}succeeded"), t.succeeded);
        self.push(format!("{at}responses"), t.responses.len());
        for (i, r) in t.responses.iter().enumerate() {
            let at = format!("{at}responses[{i}].");
            match &r.response {
                Some(response_op::Response::ResponseRange(r)) => {
                    self.range(&format!("{at}range."), r)
                }
                Some(response_op::Response::ResponsePut(p)) => self.put(&format!("{at}put."), p),
                Some(response_op::Response::ResponseDeleteRange(d)) => {
                    self.delete(&format!("{at}delete."), d)
                }
                Some(response_op::Response::ResponseTxn(t)) => self.txn(&format!("{at}txn."), t),
                None => self.push(at, "empty"),
            }
        }
    }

    fn event(&mut self, at: &str, e: &Event) {
        let kind = if e.r#type == 0 { "PUT" } else { "DELETE" };
        self.push(format!("{at}type"), kind);
        match &e.kv {
            Some(kv) => self.kv(&format!("{at}kv."), kv),
            None => self.push(format!("{at}kv"), "none"),
        }
        self.prev_kv(at, &e.prev_kv);
    }
}

/// The keys of a list of key-values, in order.
fn keys(kvs: &[KeyValue]) -> String {
    let keys: Vec<String> = kvs.iter().map(|kv| text(&kv.key)).collect();
    format!("{} [{}]", kvs.len(), keys.join(", "))
}

/// An event as "revision key", which identifies it within one watch.
fn event_id(e: &Event) -> String {
    let kv = e.kv.clone().unwrap_or_default();
    format!("{} {}", kv.mod_revision, String::from_utf8_lossy(&kv.key))
}

/// Bytes as the quoted text a reader expects (keys and values here are ASCII).
pub fn text(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}
