//! The recorder: where every node's events and every client's operations land during a run.
//!
//! One recorder per run, created inside the simulation and handed to each node; it stamps events
//! with simulated time and writes the trace line at the moment of recording, so the trace order
//! is the simulation's own deterministic order. It never reads the wall clock.

use crate::history::trace::Trace;
use crate::history::{
    printable, ApiOperation, ApiWatch, ApiWatchEnd, ApiWatchEvent, ChunkedList, CompactionRequest,
    EventKind, Freshness, History, HistoryParams, LeaseOperation, LeaseOutcome, LeaseRequest,
    LeaseResult, ListPage, Operation, Outcome, PageAnswer, Request, SimNanos, WatchEventRecord,
    WatchSession, WatchSessionEnd, WorldEvent,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use store::observe::{Observer, StoreEvent};
use tokio::time::Instant;

#[derive(Default)]
struct State {
    ops: Vec<Operation>,
    /// Invoked operations not yet completed, by id.
    pending: BTreeMap<u64, usize>,
    events: Vec<WorldEvent>,
    trace: Trace,
    next_op: u64,
    watches: Vec<WatchSession>,
    next_response: u64,
    lists: Vec<ChunkedList>,
    api_watches: Vec<ApiWatch>,
    leases: Vec<LeaseOperation>,
    /// Invoked lease operations not yet completed, by id.
    pending_leases: BTreeMap<u64, usize>,
    api_ops: Vec<ApiOperation>,
    compactions: Vec<CompactionRequest>,
    /// Invoked facade requests not yet completed, by id.
    pending_api: BTreeMap<u64, usize>,
    /// Revisions already reported committed, with the key and whether it was a delete: every
    /// etcd member applies (and reports) each one.
    committed: BTreeMap<i64, (String, bool)>,
    /// Each etcd member's last report of what it fsynced, held back until its node is killed:
    /// members report at every fsync, and only the state at a kill is worth a line.
    persisted: BTreeMap<String, StoreEvent>,
}

#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    state: Arc<Mutex<State>>,
}

impl State {
    /// A KV or facade operation invoked at `at_ns` under the next operation id, open until
    /// completed.
    fn open_op(
        &mut self,
        at_ns: SimNanos,
        client: &str,
        server: &str,
        request: Request,
    ) -> Operation {
        let id = self.next_op;
        self.next_op += 1;
        Operation {
            id,
            client: client.to_string(),
            server: server.to_string(),
            invoke_ns: at_ns,
            complete_ns: at_ns,
            request,
            outcome: Outcome::Unknown {
                error: "never completed".into(),
            },
        }
    }
}

/// Completes `op` at `at_ns` with `outcome` and traces it.
fn close_op(trace: &mut Trace, op: &mut Operation, at_ns: SimNanos, outcome: Outcome) {
    op.complete_ns = at_ns;
    op.outcome = outcome;
    trace.push(at_ns, &op.client, Completion(op));
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// Must be created inside the simulation (or, live, when the run starts): time zero is now.
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            state: Arc::default(),
        }
    }

    pub fn now_ns(&self) -> SimNanos {
        Instant::now().duration_since(self.start).as_nanos() as SimNanos
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("recorder lock poisoned")
    }

    pub fn event(&self, node: &str, kind: EventKind) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        if matches!(kind, EventKind::NodeKilled) {
            // What the node's member counted on when it died: its restart is held to it.
            if let Some(event) = s.persisted.remove(node) {
                let kind = EventKind::Store { event };
                s.trace.push(at_ns, node, describe_event(&kind));
                s.events.push(WorldEvent {
                    at_ns,
                    node: node.to_string(),
                    kind,
                });
            }
        }
        let line = describe_event(&kind);
        s.trace.push(at_ns, node, &line);
        s.events.push(WorldEvent {
            at_ns,
            node: node.to_string(),
            kind,
        });
    }

    /// Records the start of an operation; returns its id for `complete`.
    pub fn invoke(&self, client: &str, server: &str, request: Request) -> u64 {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let op = s.open_op(at_ns, client, server, request);
        let id = op.id;
        let index = s.ops.len();
        s.ops.push(op);
        s.pending.insert(id, index);
        id
    }

    pub fn complete(&self, id: u64, outcome: Outcome) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let Some(index) = s.pending.remove(&id) else {
            return;
        };
        let s = &mut *s;
        close_op(&mut s.trace, &mut s.ops[index], at_ns, outcome);
    }

    /// Records the start of a request through the apiserver facade, as the operation on its
    /// key; returns its id for `complete_api`.
    pub fn invoke_api(&self, client: &str, server: &str, request: Request, read: Freshness) -> u64 {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let op = s.open_op(at_ns, client, server, request);
        let id = op.id;
        let index = s.api_ops.len();
        s.api_ops.push(ApiOperation { op, read });
        s.pending_api.insert(id, index);
        id
    }

    pub fn complete_api(&self, id: u64, outcome: Outcome) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let Some(index) = s.pending_api.remove(&id) else {
            return;
        };
        let s = &mut *s;
        close_op(&mut s.trace, &mut s.api_ops[index].op, at_ns, outcome);
    }

    /// Records the start of a lease client's request; returns its id for `complete_lease`.
    pub fn invoke_lease(
        &self,
        client: &str,
        server: &str,
        life: u64,
        request: LeaseRequest,
    ) -> u64 {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let id = s.next_op;
        s.next_op += 1;
        let index = s.leases.len();
        s.leases.push(LeaseOperation {
            id,
            client: client.to_string(),
            life,
            server: server.to_string(),
            invoke_ns: at_ns,
            complete_ns: at_ns,
            request,
            outcome: LeaseOutcome::Unknown {
                error: "never completed".into(),
            },
        });
        s.pending_leases.insert(id, index);
        id
    }

    pub fn complete_lease(&self, id: u64, outcome: LeaseOutcome) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let Some(index) = s.pending_leases.remove(&id) else {
            return;
        };
        let s = &mut *s;
        let op = &mut s.leases[index];
        op.complete_ns = at_ns;
        op.outcome = outcome;
        s.trace.push(at_ns, &op.client, LeaseCompletion(op));
    }

    /// Records a watch stream's creation, requested at `invoked_ns`; returns its session id.
    pub fn open_watch(
        &self,
        client: &str,
        server: &str,
        range: (&str, &str),
        start_revision: i64,
        invoked_ns: SimNanos,
    ) -> u64 {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let id = s.watches.len() as u64;
        s.watches.push(WatchSession {
            id,
            client: client.into(),
            server: server.into(),
            start_key: range.0.into(),
            end_key: range.1.into(),
            start_revision,
            invoked_ns,
            opened_ns: at_ns,
            ..Default::default()
        });
        s.trace.push(
            at_ns,
            client,
            format_args!("watch#{id} open on {server} from revision {start_revision}"),
        );
        id
    }

    /// Records the events of one watch response, in order.
    pub fn watch_events(&self, session: u64, events: Vec<WatchEventRecord>) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let response = s.next_response;
        s.next_response += 1;
        let s = &mut *s;
        let w = &mut s.watches[session as usize];
        s.trace.push(
            at_ns,
            &w.client,
            format_args!("watch#{session} events at {}", Revisions(&events)),
        );
        w.events.extend(events.into_iter().map(|mut e| {
            e.at_ns = at_ns;
            e.response = response;
            e
        }));
    }

    /// Traces `line` for a watch session and hands its record to `update`.
    fn watch_update(
        &self,
        session: u64,
        line: fmt::Arguments<'_>,
        update: impl FnOnce(u64, &mut WatchSession),
    ) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let s = &mut *s;
        let w = &mut s.watches[session as usize];
        s.trace
            .push(at_ns, &w.client, format_args!("watch#{session} {line}"));
        update(at_ns, w);
    }

    pub fn watch_progress(&self, session: u64, revision: i64) {
        self.watch_update(session, format_args!("progress {revision}"), |at_ns, w| {
            w.progress.push((at_ns, revision))
        });
    }

    pub fn end_watch(&self, session: u64, compact_revision: i64, reason: &str) {
        self.watch_update(
            session,
            format_args!("ended: {reason} (compact revision {compact_revision})"),
            |at_ns, w| {
                w.end = Some(WatchSessionEnd {
                    at_ns,
                    compact_revision,
                    reason: reason.into(),
                })
            },
        );
    }

    /// Starts a chunked LIST record; pages follow with `list_page`.
    pub fn start_list(&self, mut list: ChunkedList) -> u64 {
        let mut s = self.lock();
        list.id = s.lists.len() as u64;
        let id = list.id;
        s.lists.push(list);
        id
    }

    pub fn list_page(&self, list: u64, page: ListPage) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let l = &s.lists[list as usize];
        let line = format!(
            "list#{list} {} page {} -> {}",
            l.resource,
            l.pages.len() + 1,
            match &page.answer {
                PageAnswer::Page {
                    items,
                    resource_version,
                    remaining_item_count,
                    ..
                } => format!(
                    "{} items rv={resource_version} remaining={remaining_item_count:?}",
                    items.len()
                ),
                PageAnswer::Status { code, reason, .. } => format!("{code} {reason}"),
                PageAnswer::NoAnswer { error } => format!("no answer: {error}"),
            }
        );
        let client = l.client.clone();
        s.trace.push(at_ns, &client, &line);
        s.lists[list as usize].pages.push(page);
    }

    pub fn abandon_list(&self, list: u64, why: &str) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let client = s.lists[list as usize].client.clone();
        s.trace
            .push(at_ns, &client, format_args!("list#{list} abandoned: {why}"));
        s.lists[list as usize].abandoned = Some(why.to_string());
    }

    pub fn open_api_watch(
        &self,
        client: &str,
        server: &str,
        request: store::apiserver::WatchRequest,
    ) -> u64 {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let id = s.api_watches.len() as u64;
        let line = format!(
            "api-watch#{id} on {server}: {} rv={:?} sendInitialEvents={} match={:?} continue={} accept={:?}",
            request.resource,
            request.resource_version,
            request.send_initial_events,
            request.resource_version_match,
            request.continue_token.is_some(),
            request.accept
        );
        s.trace.push(at_ns, client, &line);
        s.api_watches.push(ApiWatch {
            id,
            client: client.to_string(),
            server: server.to_string(),
            request,
            opened_ns: at_ns,
            events: Vec::new(),
            end: None,
        });
        id
    }

    pub fn api_watch_event(&self, watch: u64, mut event: ApiWatchEvent) {
        event.at_ns = self.now_ns();
        let mut s = self.lock();
        let s = &mut *s;
        let w = &mut s.api_watches[watch as usize];
        let end = if event.initial_events_end {
            " initial-events-end"
        } else {
            ""
        };
        s.trace.push(
            event.at_ns,
            &w.client,
            format_args!(
                "api-watch#{watch} {:?} {} rv={}{end}",
                event.kind,
                printable(&event.key),
                event.resource_version,
            ),
        );
        w.events.push(event);
    }

    /// True while the stream has no end recorded.
    pub fn api_watch_open(&self, watch: u64) -> bool {
        self.lock().api_watches[watch as usize].end.is_none()
    }

    pub fn end_api_watch(&self, watch: u64, code: Option<u16>, reason: &str) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let client = s.api_watches[watch as usize].client.clone();
        s.trace.push(
            at_ns,
            &client,
            format_args!("api-watch#{watch} ended: {code:?} {reason}"),
        );
        s.api_watches[watch as usize].end = Some(ApiWatchEnd {
            at_ns,
            code,
            reason: reason.to_string(),
        });
    }

    /// An observer that attributes store events to `node`.
    pub fn observer(&self, node: &str) -> Arc<dyn Observer> {
        Arc::new(NodeObserver {
            node: node.to_string(),
            recorder: self.clone(),
        })
    }

    /// Closes the run: operations still pending (their client was killed, or the run ended)
    /// stay `Unknown` with completion at the end.
    /// A Compact request at `revision` sent by `client` to `server`; completed with
    /// [`Recorder::complete_compaction`].
    pub fn invoke_compaction(&self, client: &str, server: &str, revision: i64) -> u64 {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let id = s.next_op;
        s.next_op += 1;
        s.trace.push(
            at_ns,
            client,
            format!("invoke op#{id} compact revision {revision} on {server}"),
        );
        s.compactions.push(CompactionRequest {
            id,
            client: client.to_string(),
            server: server.to_string(),
            invoke_ns: at_ns,
            complete_ns: at_ns,
            revision,
            outcome: "never completed".into(),
        });
        id
    }

    /// The answer to compaction `id`: `ok`, or the error.
    pub fn complete_compaction(&self, id: u64, outcome: &str) {
        let at_ns = self.now_ns();
        let mut s = self.lock();
        let Some(i) = s.compactions.iter().rposition(|c| c.id == id) else {
            return;
        };
        s.compactions[i].complete_ns = at_ns;
        s.compactions[i].outcome = outcome.to_string();
        let client = s.compactions[i].client.clone();
        s.trace.push(
            at_ns,
            &client,
            format!("complete op#{id} compact: {outcome}"),
        );
    }

    pub fn finish(&self, params: HistoryParams) -> (History, Trace) {
        let end = self.now_ns();
        let mut s = self.lock();
        let pending: Vec<usize> = s.pending.values().copied().collect();
        for index in pending {
            s.ops[index].complete_ns = end;
        }
        s.pending.clear();
        let pending: Vec<usize> = s.pending_leases.values().copied().collect();
        for index in pending {
            s.leases[index].complete_ns = end;
        }
        s.pending_leases.clear();
        let pending: Vec<usize> = s.pending_api.values().copied().collect();
        for index in pending {
            s.api_ops[index].op.complete_ns = end;
        }
        s.pending_api.clear();
        let history = History {
            params,
            ops: std::mem::take(&mut s.ops),
            events: std::mem::take(&mut s.events),
            watches: std::mem::take(&mut s.watches),
            lists: std::mem::take(&mut s.lists),
            api_watches: std::mem::take(&mut s.api_watches),
            leases: std::mem::take(&mut s.leases),
            api_ops: std::mem::take(&mut s.api_ops),
            compactions: std::mem::take(&mut s.compactions),
        };
        (history, std::mem::take(&mut s.trace))
    }
}

struct NodeObserver {
    node: String,
    recorder: Recorder,
}

impl Observer for NodeObserver {
    fn record(&self, event: StoreEvent) {
        if let StoreEvent::MemberPersisted { .. } = &event {
            let mut state = self.recorder.lock();
            state.persisted.insert(self.node.clone(), event);
            return;
        }
        if let StoreEvent::DbInsert {
            id, key, deleted, ..
        } = &event
        {
            // The first report of a commit is the fact and the other members' identical reports
            // are echoes; a different change at a revision already taken is kept, for the
            // checkers to see.
            let mut state = self.recorder.lock();
            match state.committed.get(id) {
                Some((k, d)) if k == key && d == deleted => return,
                Some(_) => {}
                None => {
                    state.committed.insert(*id, (key.clone(), *deleted));
                }
            }
        }
        self.recorder.event(&self.node, EventKind::Store { event });
    }
}

/// The events' revisions, comma-separated.
struct Revisions<'a>(&'a [WatchEventRecord]);

impl fmt::Display for Revisions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            write!(f, "{comma}{}", e.mod_revision)?;
        }
        Ok(())
    }
}

/// A completed operation's trace line: `op#<id> <request> -> <outcome>`, written straight into
/// the trace.
struct Completion<'a>(&'a Operation);

impl fmt::Display for Completion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.0;
        write!(f, "op#{} ", op.id)?;
        match &op.request {
            Request::Get {
                key,
                revision,
                serializable,
            } => {
                write!(f, "get {key}")?;
                if *revision > 0 {
                    write!(f, " rev={revision}")?;
                }
                if *serializable {
                    f.write_str(" serializable")?;
                }
            }
            Request::List {
                start,
                limit,
                revision,
                serializable,
                count_only,
                keys_only,
                ..
            } => {
                write!(f, "list {} limit={limit} rev={revision}", printable(start))?;
                for (on, flag) in [
                    (*serializable, " serializable"),
                    (*count_only, " count-only"),
                    (*keys_only, " keys-only"),
                ] {
                    if on {
                        f.write_str(flag)?;
                    }
                }
            }
            Request::Create { key, .. } => write!(f, "create {key}")?,
            Request::Update {
                key,
                expected_mod_revision,
                ..
            } => write!(f, "update {key} if mod={expected_mod_revision}")?,
            Request::Delete {
                key,
                expected_mod_revision,
            } => write!(f, "delete {key} if mod={expected_mod_revision}")?,
        }
        f.write_str(" -> ")?;
        use crate::history::OpResult;
        match &op.outcome {
            Outcome::Ok {
                header_revision,
                result: OpResult::Read { kvs, more, count },
            } => write!(
                f,
                "ok rev={header_revision} kvs={} more={more} count={count}",
                kvs.len()
            ),
            Outcome::Ok {
                header_revision,
                result: OpResult::Write { succeeded, .. },
            } => write!(f, "ok rev={header_revision} succeeded={succeeded}"),
            Outcome::Failed { error } => write!(f, "failed: {error}"),
            Outcome::Unknown { error } => write!(f, "unknown: {error}"),
        }
    }
}

/// A completed lease request's trace line: `op#<id> lease <request> -> <outcome>`.
struct LeaseCompletion<'a>(&'a LeaseOperation);

impl fmt::Display for LeaseCompletion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.0;
        write!(f, "op#{} lease ", op.id)?;
        match &op.request {
            LeaseRequest::Grant { ttl_s } => write!(f, "grant ttl={ttl_s}")?,
            LeaseRequest::KeepAlive { lease, stream } => {
                write!(f, "keep-alive {lease} stream={stream}")?
            }
            LeaseRequest::Revoke { lease } => write!(f, "revoke {lease}")?,
            LeaseRequest::TimeToLive { lease } => write!(f, "time-to-live {lease}")?,
            LeaseRequest::Leases => f.write_str("leases")?,
            LeaseRequest::Attach { lease, key } => write!(f, "attach {key} to {lease}")?,
            LeaseRequest::Read { lease, start, .. } => {
                write!(f, "read {} of {lease}", printable(start))?
            }
        }
        f.write_str(" -> ")?;
        match &op.outcome {
            LeaseOutcome::Ok {
                header_revision,
                result,
            } => {
                write!(f, "ok rev={header_revision}")?;
                match result {
                    LeaseResult::Granted { lease, ttl_s } => write!(f, " id={lease} ttl={ttl_s}"),
                    LeaseResult::KeptAlive { ttl_s } => write!(f, " ttl={ttl_s}"),
                    LeaseResult::Revoked | LeaseResult::Attached => Ok(()),
                    LeaseResult::TimeToLive {
                        ttl_s,
                        granted_ttl_s,
                        keys,
                    } => write!(
                        f,
                        " ttl={ttl_s} granted={granted_ttl_s} keys={}",
                        keys.len()
                    ),
                    LeaseResult::Leases { ids } => write!(f, " leases={}", ids.len()),
                    LeaseResult::Read { kvs } => write!(f, " kvs={}", kvs.len()),
                }
            }
            LeaseOutcome::Failed { error } => write!(f, "failed: {error}"),
            LeaseOutcome::Unknown { error } => write!(f, "unknown: {error}"),
        }
    }
}

fn describe_event(kind: &EventKind) -> String {
    match kind {
        EventKind::Store { event } => {
            // Compact and stable: serde's field order is the declaration order.
            serde_json::to_string(event).unwrap_or_else(|e| format!("unprintable event: {e}"))
        }
        other => serde_json::to_string(other).unwrap_or_else(|e| format!("unprintable event: {e}")),
    }
}
