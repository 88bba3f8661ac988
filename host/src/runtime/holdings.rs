//! What every pipeline of this process holds, by the stream and group it
//! consumes, and the newest id this process knows each group delivered:
//! the process-wide view the reapers and the reader's regroup ask.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use super::inflight::InFlight;
use crate::stream::groups::HeldEntry;
use crate::vocab::ids::id_parts;

/// What every pipeline of this process holds, by the stream and group it
/// consumes: "held here" means the whole process, so one pipeline's reaper
/// never claims what a sibling of the same group holds (it would count a
/// delivery and run the entry twice). Costs nothing per entry: each
/// pipeline keeps its own [`InFlight`], joins once at start, and the
/// reaper asks every sibling's per page of the pending list.
#[derive(Debug, Default)]
pub struct Holdings {
    groups: Mutex<HashMap<(String, String), Arc<GroupHoldings>>>,
}

impl Holdings {
    /// Adds a pipeline consuming `group` of `stream` as `consumer`, holding
    /// `held`; it drops out once its `InFlight` is gone. The answer is the
    /// group's view, shared by its pipelines here.
    pub fn join(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        held: &Arc<InFlight>,
    ) -> Arc<GroupHoldings> {
        let group = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((stream.to_owned(), group.to_owned()))
            .or_default()
            .clone();
        group.add(consumer, held);
        group
    }
}

/// The pipelines of this process that consume one group, and the newest id
/// this process knows the group delivered.
#[derive(Debug, Default)]
pub struct GroupHoldings {
    members: RwLock<Vec<Member>>,
    newest: Mutex<Option<(u64, u64)>>,
}

/// One pipeline of a group.
#[derive(Debug)]
struct Member {
    consumer: String,
    held: Weak<InFlight>,
}

impl GroupHoldings {
    fn add(&self, consumer: &str, held: &Arc<InFlight>) {
        let mut members = self.members.write().unwrap_or_else(|e| e.into_inner());
        members.retain(|m| m.held.strong_count() > 0);
        members.push(Member {
            consumer: consumer.to_owned(),
            held: Arc::downgrade(held),
        });
    }

    fn live(&self) -> Vec<(String, Arc<InFlight>)> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|m| Some((m.consumer.clone(), m.held.upgrade()?)))
            .collect()
    }

    /// The `rows` whose id no pipeline of this process holds.
    pub fn not_held<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> &str) -> Vec<T> {
        for (_, held) in self.live() {
            if rows.is_empty() {
                break;
            }
            held.retain_not_held(&mut rows, &id);
        }
        rows
    }

    /// Every entry a pipeline of this process holds, with its consumer and
    /// the delivery it is at.
    pub fn held(&self) -> Vec<HeldEntry> {
        self.live()
            .into_iter()
            .flat_map(|(consumer, held)| {
                held.snapshot()
                    .into_iter()
                    .map(move |(id, deliveries)| HeldEntry {
                        consumer: consumer.clone(),
                        id,
                        deliveries,
                    })
            })
            .collect()
    }

    /// The group delivered `id` (to a pipeline here, or before: its
    /// last-delivered id as first seen).
    pub fn delivered(&self, id: &str) {
        let Some(parts) = id_parts(id) else { return };
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        if newest.is_none_or(|n| n < parts) {
            *newest = Some(parts);
        }
    }

    /// The newest id this process knows the group delivered.
    pub fn newest(&self) -> Option<String> {
        let newest = *self.newest.lock().unwrap_or_else(|e| e.into_inner());
        newest.map(|(ms, seq)| format!("{ms}-{seq}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, deliveries: u32) -> crate::vocab::entry::Entry {
        crate::vocab::entry::Entry {
            id: id.into(),
            payload: crate::vocab::entry::Payload::Fields(Vec::new()),
            delivery_count: deliveries,
        }
    }

    #[test]
    fn what_any_pipeline_of_a_group_holds_is_held_for_all_of_them() {
        let holdings = Holdings::default();
        let (one, two, other) = (
            Arc::new(InFlight::default()),
            Arc::new(InFlight::default()),
            Arc::new(InFlight::default()),
        );
        let group = holdings.join("s", "g", "c-1", &one);
        assert!(Arc::ptr_eq(&group, &holdings.join("s", "g", "c-2", &two)));
        let elsewhere = holdings.join("s", "h", "c-3", &other);
        one.hold_new(vec![entry("1-0", 1)]);
        two.hold_new(vec![entry("2-0", 3)]);
        other.hold_new(vec![entry("3-0", 1)]);
        let rows = vec!["1-0", "2-0", "3-0", "4-0"];
        assert_eq!(group.not_held(rows.clone(), |r| r), ["3-0", "4-0"]);
        assert_eq!(elsewhere.not_held(rows, |r| r), ["1-0", "2-0", "4-0"]);
        two.redelivered("2-0", 4);
        let mut held = group.held();
        held.sort_by(|a, b| a.id.cmp(&b.id));
        let held: Vec<_> = held
            .iter()
            .map(|h| (h.consumer.as_str(), h.id.as_str(), h.deliveries))
            .collect();
        assert_eq!(held, [("c-1", "1-0", 1), ("c-2", "2-0", 4)]);
        drop(two);
        assert_eq!(
            group.not_held(vec!["2-0"], |r| r),
            ["2-0"],
            "a stopped pipeline holds nothing"
        );
    }

    #[test]
    fn the_newest_delivered_id_only_moves_forward() {
        let group = GroupHoldings::default();
        assert_eq!(group.newest(), None);
        group.delivered("10-2");
        group.delivered("9-99");
        group.delivered("not an id");
        assert_eq!(group.newest().as_deref(), Some("10-2"));
        group.delivered("100-0");
        assert_eq!(group.newest().as_deref(), Some("100-0"));
    }
}
