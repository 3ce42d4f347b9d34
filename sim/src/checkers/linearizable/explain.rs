//! Words for violation messages: an operation, a write, a key's state at a revision.
//!
//! Each message must be acted on without opening the trace, so it names operations by id,
//! client, server and times, and writes by their revision and outcome. Only called for the
//! violations a report keeps in full.

use super::model::{Change, Event, Model};
use crate::checkers::secs;
use crate::history::{Kv, Operation, Outcome, Request};

pub(super) use crate::history::printable;

/// A value, cut short: workload values are a name and a sequence number padded with `x`.
pub(super) fn short(value: &str) -> String {
    let trimmed = match value.trim_end_matches('x') {
        "" => value,
        t => t,
    };
    let cut: String = trimmed.chars().take(32).collect();
    if cut.len() < value.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

pub(super) fn request_line(r: &Request) -> String {
    let at = |revision: i64| {
        if revision > 0 {
            format!(" at revision {revision}")
        } else {
            String::new()
        }
    };
    match r {
        Request::Get {
            key,
            revision,
            serializable,
        } => format!(
            "get {}{}{}",
            printable(key),
            at(*revision),
            if *serializable { ", serializable" } else { "" }
        ),
        Request::List {
            start,
            end,
            limit,
            revision,
            serializable,
            count_only,
            keys_only,
        } => format!(
            "list [{}, {}){}{}{}{}{}",
            printable(start),
            printable(end),
            if *limit > 0 {
                format!(" limit {limit}")
            } else {
                String::new()
            },
            at(*revision),
            if *serializable { ", serializable" } else { "" },
            if *count_only { ", count only" } else { "" },
            if *keys_only { ", keys only" } else { "" },
        ),
        Request::Create { key, value } => format!("create {} = {}", printable(key), short(value)),
        Request::Update {
            key,
            value,
            expected_mod_revision,
        } => format!(
            "update {} = {} if mod revision {expected_mod_revision}",
            printable(key),
            short(value)
        ),
        Request::Delete {
            key,
            expected_mod_revision,
        } => format!(
            "delete {} if mod revision {expected_mod_revision}",
            printable(key)
        ),
    }
}

/// `op#12 by client-2 on kine-1 (get /k, invoked 1.200s, completed 1.204s)`.
pub(super) fn op_line(o: &Operation) -> String {
    format!(
        "op#{} by {} on {} ({}, invoked {}, {})",
        o.id,
        o.client,
        o.server,
        request_line(&o.request),
        secs(o.invoke_ns),
        match &o.outcome {
            Outcome::Unknown { .. } => format!("outcome unknown at {}", secs(o.complete_ns)),
            _ => format!("completed {}", secs(o.complete_ns)),
        }
    )
}

/// A write that took effect, with how we know.
pub(super) fn write_line(m: &Model, e: &Event) -> String {
    let o = &m.ops[e.op];
    let how = match e.seen_by {
        Some(reader) => format!(
            "outcome unknown at {}, shown by op#{}",
            secs(o.complete_ns),
            m.ops[reader].id
        ),
        None => format!("acknowledged at {}", secs(o.complete_ns)),
    };
    format!(
        "op#{} by {} ({}, invoked {}, {how}) at revision {}",
        o.id,
        o.client,
        match e.change {
            Change::Create => "create",
            Change::Update { .. } => "update",
            Change::Delete { .. } => "delete",
        },
        secs(o.invoke_ns),
        e.rev
    )
}

/// What a key-value showed.
pub(super) fn kv_line(kv: &Kv, keys_only: bool) -> String {
    format!(
        "mod revision {} (create revision {}, version {}{})",
        kv.mod_revision,
        kv.create_revision,
        kv.version,
        if keys_only {
            String::new()
        } else {
            format!(", value {}", short(&kv.value))
        }
    )
}

/// `key`'s state after `line[x]` (x < 0: before its first write), as of `rev`.
pub(super) fn state_line(m: &Model, key: usize, x: isize, rev: i64) -> String {
    if x < 0 {
        return "absent: no write of it at or below that revision".into();
    }
    let e = &m.lines[key][x as usize];
    if !e.change.is_put() {
        return format!("absent: deleted by {}", write_line(m, e));
    }
    let live = format!(
        "at mod revision {} (create revision {}{}, value {}), written by {}",
        e.rev,
        e.create_rev,
        if m.etcd {
            format!(", version {}", e.version)
        } else {
            String::new()
        },
        short(m.value(e)),
        write_line(m, e)
    );
    match m.suspects.get(&(key, x as usize)) {
        Some(s) => {
            let deletes: Vec<String> = s
                .deletes
                .iter()
                .map(|&d| format!("op#{}", m.ops[d].id))
                .collect();
            match s.seen_absent {
                Some((r, op)) if rev >= r => format!(
                    "absent: {live}, then deleted by one of {} (outcome unknown), as op#{} saw it absent at revision {r}",
                    deletes.join(", "),
                    m.ops[op].id
                ),
                _ => format!(
                    "{live} (unless {} of unknown outcome deleted it)",
                    deletes.join(", ")
                ),
            }
        }
        None => live,
    }
}

/// The writes in `line[from..=to]`, at most three of them by name.
pub(super) fn writes_between(m: &Model, key: usize, from: usize, to: usize) -> String {
    let line = &m.lines[key];
    let named: Vec<String> = (from..=to.min(from + 2))
        .map(|x| write_line(m, &line[x]))
        .collect();
    let more = (to + 1).saturating_sub(from + named.len());
    if more > 0 {
        format!("{}, and {more} more", named.join("; "))
    } else {
        named.join("; ")
    }
}

/// Where a value came from, when no write of the key produced it at the revision shown.
pub(super) fn value_origin(m: &Model, key: &str, kv: &Kv, keys_only: bool) -> String {
    if keys_only {
        return format!(
            "no write of {} has revision {}",
            printable(key),
            kv.mod_revision
        );
    }
    let writer = m.ops.iter().find(|o| {
        super::model::value_of(&o.request).is_some_and(|v| v == kv.value) && o.request.is_write()
    });
    let Some(w) = writer else {
        return format!("no write ever produced value {}", short(&kv.value));
    };
    let target = w.request.write_key().unwrap_or_default();
    let whose = format!(
        "value {} is op#{}'s by {}",
        short(&kv.value),
        w.id,
        w.client
    );
    if target != key {
        return format!("{whose}, written to {}, not this key", printable(target));
    }
    match &w.outcome {
        Outcome::Failed { error } => {
            format!("{whose}, whose request failed ({error}): it never took effect")
        }
        Outcome::Ok {
            header_revision,
            result:
                crate::history::OpResult::Write {
                    succeeded: true, ..
                },
        } => format!(
            "{whose}, acknowledged at revision {header_revision}, not {}",
            kv.mod_revision
        ),
        Outcome::Ok { .. } => format!("{whose}, whose compare failed: it wrote nothing"),
        Outcome::Unknown { .. } => {
            let at = m
                .lines
                .iter()
                .flatten()
                .find(|e| std::ptr::eq(&m.ops[e.op], w));
            match at {
                Some(e) => format!(
                    "{whose} (outcome unknown), which other answers place at revision {}",
                    e.rev
                ),
                None => format!("{whose} (outcome unknown)"),
            }
        }
    }
}
