//! The reference side: faultline's etcd member MVCC (`src/etcd/mvcc.rs`), called directly.
//!
//! It answers as an etcd member's services do around that store (outer header at the current
//! revision, a compaction's three phases at once, watches fed from the store's own events), with
//! no raft and no network in between, so every difference from etcd is the store's.

use crate::answer::{Answer, Cancel, WatchOutcome};
use crate::ops::{Op, Request};
use std::collections::BTreeMap;
use store::design::CompactionVariant;
use store::error::StoreError;
use store::etcd::mvcc::Mvcc;
use store::proto::etcdserverpb::{
    CompactionResponse, ResponseHeader, WatchCreateRequest, WatchResponse,
};
use store::proto::mvccpb::Event;
use store::server::{compacted_cancel, progress_notification};

pub struct Model {
    pub mvcc: Mvcc,
    pub leases: crate::lease::ModelLeases,
    watches: BTreeMap<usize, ModelWatch>,
}

struct ModelWatch {
    create: WatchCreateRequest,
    /// The first revision it watches (a watch may start in the future).
    from: i64,
    compact_at_open: i64,
    outcome: WatchOutcome,
    /// What etcd 3.4.23 serves a watch the model refused at its compact revision (the
    /// `watch=etcd-18089` behaviour); compared only by that allowance.
    as_3_4: Option<Vec<Event>>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn error(e: StoreError) -> Answer {
    Answer::from_status(&tonic::Status::from(e))
}

impl Model {
    pub fn new() -> Self {
        Model {
            mvcc: Mvcc::new(CompactionVariant::Fixed),
            leases: Default::default(),
            watches: BTreeMap::new(),
        }
    }

    pub fn apply(&mut self, op: &Op) -> Answer {
        let before = self.mvcc.current_revision();
        let answer = match (op, op.request()) {
            (_, Some(request)) => self.kv(request),
            (Op::Watch { watch, create }, None) => self.watch(*watch, create),
            (Op::Progress { watch }, None) => self.progress(*watch),
            (Op::Lease(lease), None) => self.leases.apply(lease, &mut self.mvcc),
            (op, None) => unreachable!("{op} has a request"),
        };
        if self.mvcc.current_revision() > before {
            self.deliver(before + 1);
        }
        answer
    }

    fn kv(&mut self, request: Request) -> Answer {
        let m = &mut self.mvcc;
        let answer = match request {
            Request::Range(r) => m.range(&r).map(Answer::Range),
            Request::Put(p) => m.put(&p).map(Answer::Put),
            Request::Delete(d) => m.delete_range(&d).map(Answer::Delete),
            Request::Txn(t) => m.txn(&t).map(Answer::Txn),
            Request::Compact(c) => m.schedule_compaction(c.revision).map(|()| {
                m.compact_rows(c.revision);
                m.finish_compaction(c.revision);
                Answer::Compact(CompactionResponse { header: None })
            }),
        };
        // The member's services put the current revision in the outer header.
        let current = header(self.mvcc.current_revision());
        match answer {
            Ok(mut a) => {
                match &mut a {
                    Answer::Range(r) => r.header = current,
                    Answer::Put(p) => p.header = current,
                    Answer::Delete(d) => d.header = current,
                    Answer::Txn(t) => t.header = current,
                    Answer::Compact(c) => c.header = current,
                    _ => unreachable!("a key-value answer"),
                }
                a
            }
            Err(e) => error(e),
        }
    }

    fn watch(&mut self, id: usize, create: &WatchCreateRequest) -> Answer {
        let current = self.mvcc.current_revision();
        let from = if create.start_revision > 0 {
            create.start_revision
        } else {
            current + 1
        };
        let mut watch = ModelWatch {
            create: create.clone(),
            from,
            compact_at_open: self.mvcc.compact_revision(),
            outcome: WatchOutcome::default(),
            as_3_4: None,
        };
        match self.mvcc.watch_events(create, from, false) {
            Ok(events) => watch.outcome.events = events.into_iter().map(|(_, e)| e).collect(),
            Err(compact_revision) => {
                let cancel = compacted_cancel(None, 0, compact_revision);
                watch.outcome.cancel = Some(Cancel {
                    compact_revision: cancel.compact_revision,
                    reason: cancel.cancel_reason,
                });
                if from >= self.mvcc.compact_revision() {
                    watch.as_3_4 = self
                        .mvcc
                        .watch_events(create, from, true)
                        .ok()
                        .map(|events| events.into_iter().map(|(_, e)| e).collect());
                }
            }
        }
        self.watches.insert(id, watch);
        Answer::Created(WatchResponse {
            header: header(current),
            created: true,
            ..Default::default()
        })
    }

    /// Every event up to the current revision is already in the watches' outcomes; but while
    /// the stream's watch asked to start beyond the current revision, the request is deferred
    /// (etcd #20229, in 3.4.38 and 3.5.22), so the notification never names a revision below it.
    fn progress(&mut self, watch: usize) -> Answer {
        let current = self.mvcc.current_revision();
        if current < self.progress_start(watch) {
            return Answer::no_progress(crate::grpc::REQUEST_DEADLINE);
        }
        Answer::Progress(progress_notification(header(current)))
    }

    /// The start revision a progress request on watch `id`'s stream must wait for: the one its
    /// create request asked for (0 for a watch from now), or 0 once the watch was cancelled.
    pub fn progress_start(&self, id: usize) -> i64 {
        self.watches
            .get(&id)
            .filter(|w| w.outcome.cancel.is_none())
            .map_or(0, |w| w.create.start_revision)
    }

    /// Hands every open watch the events of the revisions from `from` on.
    fn deliver(&mut self, from: i64) {
        for w in self.watches.values_mut() {
            if self.mvcc.current_revision() < w.from {
                continue;
            }
            let new = self
                .mvcc
                .watch_events(&w.create, from.max(w.from), false)
                .expect("new revisions are never compacted");
            let new: Vec<Event> = new.into_iter().map(|(_, e)| e).collect();
            if let Some(as_3_4) = &mut w.as_3_4 {
                as_3_4.extend(new.iter().cloned());
            }
            if w.outcome.cancel.is_none() {
                w.outcome.events.extend(new);
            }
        }
    }

    /// How much etcd should have delivered on watch `id` by now: (events, cancelled), counting
    /// what etcd 3.4.23 serves where the model refused the watch at its compact revision.
    pub fn expected(&self, id: usize) -> (usize, bool) {
        let w = &self.watches[&id];
        match &w.as_3_4 {
            Some(served) => (served.len(), false),
            None => (w.outcome.events.len(), w.outcome.cancel.is_some()),
        }
    }

    /// What watch `id` delivered, what etcd 3.4 would have served if the model refused it at
    /// the compact revision, and the compact revision when it was opened.
    pub fn outcome(&self, id: usize) -> (Answer, Option<Vec<Event>>, i64) {
        let w = &self.watches[&id];
        (
            Answer::Watch(w.outcome.clone()),
            w.as_3_4.clone(),
            w.compact_at_open,
        )
    }
}
