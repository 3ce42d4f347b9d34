//! One recorded request as an etcd gRPC call, and the answer as the recorded outcome.
//!
//! Shared by the workload's clients and the final audit, so every etcd-level operation in a
//! history is sent and judged the same way: a read's failure is definite, a write's timeout or
//! lost answer is unknown. It records nothing itself; callers invoke and complete.

use crate::history::recorder::Recorder;
use crate::history::{Kv, OpResult, Outcome, Request, TxnAnswer};
use std::net::SocketAddr;
use std::time::Duration;
use store::proto::etcdserverpb::{
    kv_client::KvClient, response_op, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use store::proto::mvccpb::KeyValue;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

/// Sends `request` over `kv` and returns what came of it.
pub async fn send(kv: &mut KvClient<Channel>, request: &Request) -> Outcome {
    match request {
        Request::Get {
            key,
            revision,
            serializable,
        } => {
            let req = RangeRequest {
                key: key.clone().into_bytes(),
                revision: *revision,
                serializable: *serializable,
                ..Default::default()
            };
            read_outcome(kv.range(req).await)
        }
        Request::List {
            start,
            end,
            limit,
            revision,
            serializable,
            count_only,
            keys_only,
        } => {
            let req = RangeRequest {
                key: start.clone().into_bytes(),
                range_end: end.clone().into_bytes(),
                limit: *limit,
                revision: *revision,
                serializable: *serializable,
                count_only: *count_only,
                keys_only: *keys_only,
                ..Default::default()
            };
            read_outcome(kv.range(req).await)
        }
        Request::Create { key, value } => write_outcome(kv.txn(txn(key, 0, Some(value))).await),
        Request::Update {
            key,
            value,
            expected_mod_revision,
        } => write_outcome(kv.txn(txn(key, *expected_mod_revision, Some(value))).await),
        Request::Delete {
            key,
            expected_mod_revision,
        } => write_outcome(kv.txn(txn(key, *expected_mod_revision, None)).await),
    }
}

/// The final audit: a full List of the watched range at the latest revision, recorded as
/// client `audit`'s operation, tried on every server in turn (a second apart, for a minute at
/// most) until one answers. Returns the id of the last attempt.
pub async fn audit_read(
    servers: &[(String, SocketAddr)],
    recorder: &Recorder,
    timeout: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        for (name, addr) in servers {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("server addresses are valid URIs")
                .timeout(timeout)
                .connect_timeout(timeout);
            let Ok(channel) = endpoint.connect().await else {
                continue;
            };
            let request = Request::list_all("/registry/", "/registry0");
            let id = recorder.invoke("audit", name, request.clone());
            last = Some(id);
            let outcome = send(&mut KvClient::new(channel), &request).await;
            let answered = matches!(outcome, Outcome::Ok { .. });
            recorder.complete(id, outcome);
            if answered {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    last
}

/// A key-value as the history records it.
pub fn kv_of(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: String::from_utf8_lossy(&kv.value).into_owned(),
    }
}

/// Whether a failed write may still have taken effect. Only answers the store gives after
/// deciding (compacted, future revision, invalid request) are definite.
fn write_outcome_is_definite(code: Code) -> bool {
    matches!(
        code,
        Code::OutOfRange | Code::InvalidArgument | Code::FailedPrecondition
    )
}

/// The apiserver's Txn: if mod_revision(key) == expected then put (or delete) else get.
fn txn(key: &str, expected: i64, value: Option<&String>) -> TxnRequest {
    store::apiserver::guarded_txn(key, expected, value.map(String::as_str))
}

fn read_outcome(r: Result<tonic::Response<RangeResponse>, tonic::Status>) -> Outcome {
    match r {
        Ok(resp) => {
            let resp = resp.into_inner();
            Outcome::Ok {
                header_revision: resp.header.map(|h| h.revision).unwrap_or(0),
                result: OpResult::Read {
                    kvs: resp.kvs.iter().map(kv_of).collect(),
                    more: resp.more,
                    count: resp.count,
                },
            }
        }
        // A read changes nothing, so every failure is definite.
        Err(status) => Outcome::Failed {
            error: status.message().to_string(),
        },
    }
}

/// What the checks judge of one response in a Txn's answer.
fn txn_response(r: &Option<response_op::Response>) -> TxnAnswer {
    match r {
        Some(response_op::Response::ResponsePut(p)) => TxnAnswer::Put {
            prev_kv: p.prev_kv.is_some(),
        },
        Some(response_op::Response::ResponseDeleteRange(d)) => TxnAnswer::Delete {
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.len(),
        },
        Some(response_op::Response::ResponseRange(rr)) => TxnAnswer::Range {
            kvs: rr.kvs.len(),
            more: rr.more,
            count: rr.count,
        },
        _ => TxnAnswer::Other,
    }
}

fn write_outcome(r: Result<tonic::Response<TxnResponse>, tonic::Status>) -> Outcome {
    match r {
        Ok(resp) => {
            let resp = resp.into_inner();
            let current = resp.responses.iter().find_map(|r| match &r.response {
                Some(response_op::Response::ResponseRange(rr)) => rr.kvs.first().map(kv_of),
                _ => None,
            });
            let responses = resp.responses.iter().map(|r| txn_response(&r.response));
            Outcome::Ok {
                header_revision: resp.header.map(|h| h.revision).unwrap_or(0),
                result: OpResult::Write {
                    succeeded: resp.succeeded,
                    current,
                    responses: responses.collect(),
                },
            }
        }
        Err(status) if write_outcome_is_definite(status.code()) => Outcome::Failed {
            error: status.message().to_string(),
        },
        Err(status) => Outcome::Unknown {
            error: format!("{:?}: {}", status.code(), status.message()),
        },
    }
}
