//! Sticky assignment of partitions to group members: a pure function.
//!
//! Every current owner that is still a member and still subscribed keeps
//! its partitions; free partitions go to the least-loaded eligible member;
//! then single partitions move from the most- to the least-loaded member
//! (eligible for them) until loads differ by at most one. For members with
//! the same subscription this moves as few partitions as possible.

use std::collections::{BTreeMap, BTreeSet};

/// A partition: topic name and index.
pub type Tp = sluice_protocol::TopicPartition;

/// Computes the target assignment.
///
/// - `members`: member id → subscribed topics;
/// - `partitions`: topic → partition count;
/// - `current`: partition → member that owns it now.
pub fn assign(
    members: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
    current: &BTreeMap<Tp, String>,
) -> BTreeMap<Tp, String> {
    let mut load: BTreeMap<&str, Vec<Tp>> = members.keys().map(|m| (m.as_str(), Vec::new())).collect();
    let eligible = |m: &str, topic: &str| members.get(m).is_some_and(|t| t.contains(topic));
    let mut free = Vec::new();
    for (topic, count) in partitions {
        if !members.values().any(|t| t.contains(topic)) {
            continue;
        }
        for p in 0..*count {
            let tp = Tp::new(topic.clone(), p);
            match current.get(&tp) {
                Some(owner) if eligible(owner, topic) => load.entry(owner.as_str()).or_default().push(tp),
                _ => free.push(tp),
            }
        }
    }
    for tp in free {
        let least = load
            .iter()
            .filter(|(m, _)| eligible(m, &tp.topic))
            .min_by_key(|(m, tps)| (tps.len(), **m))
            .map(|(m, _)| *m);
        if let Some(m) = least {
            load.entry(m).or_default().push(tp);
        }
    }
    // Even out: move one partition at a time from the most to the least loaded.
    while let Some((&min_member, min_tps)) = load.iter().min_by_key(|(m, tps)| (tps.len(), **m)) {
        let min_len = min_tps.len();
        let donor = load
            .iter()
            .filter(|(m, tps)| **m != min_member && tps.len() > min_len + 1)
            .filter_map(|(m, tps)| {
                tps.iter()
                    .rev()
                    .find(|tp| eligible(min_member, &tp.topic))
                    .map(|tp| (*m, tps.len(), tp.clone()))
            })
            .max_by_key(|(m, len, _)| (*len, std::cmp::Reverse(*m)));
        let Some((donor, _, tp)) = donor else { break };
        if let Some(tps) = load.get_mut(donor) {
            tps.retain(|t| *t != tp);
        }
        load.entry(min_member).or_default().push(tp);
    }
    load.into_iter().flat_map(|(m, tps)| tps.into_iter().map(move |tp| (tp, m.to_owned()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        ids.iter().map(|m| (m.to_string(), topics.iter().map(|t| t.to_string()).collect())).collect()
    }

    fn counts(a: &BTreeMap<Tp, String>) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for m in a.values() {
            *c.entry(m.clone()).or_default() += 1;
        }
        c
    }

    fn moved(before: &BTreeMap<Tp, String>, after: &BTreeMap<Tp, String>) -> usize {
        before.iter().filter(|(tp, m)| after.get(*tp) != Some(*m)).count()
    }

    #[test]
    fn three_members_six_partitions_then_a_fourth_joins_and_one_leaves() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 6)].into();
        let a = assign(&members(&["a", "b", "c"], &["t"]), &parts, &BTreeMap::new());
        assert_eq!(a.len(), 6);
        assert!(counts(&a).values().all(|n| *n == 2));
        let b = assign(&members(&["a", "b", "c", "d"], &["t"]), &parts, &a);
        assert_eq!(moved(&a, &b), 1, "a fourth member takes one partition; nothing else moves");
        let mut c3 = members(&["a", "b", "c", "d"], &["t"]);
        c3.remove("b");
        let c = assign(&c3, &parts, &b);
        assert!(counts(&c).values().all(|n| *n == 2));
        let b_had = b.values().filter(|m| *m == "b").count();
        assert_eq!(moved(&b, &c), b_had, "only the leaver's partitions move");
    }

    #[test]
    fn subscriptions_are_respected() {
        let parts: BTreeMap<String, u32> = [("x".to_string(), 4), ("y".to_string(), 2)].into();
        let mut m = members(&["a"], &["x"]);
        m.extend(members(&["b"], &["x", "y"]));
        let a = assign(&m, &parts, &BTreeMap::new());
        assert_eq!(a.len(), 6);
        assert!(a.iter().all(|(tp, owner)| tp.topic != "y" || owner == "b"));
        assert_eq!(counts(&a), [("a".to_string(), 3), ("b".to_string(), 3)].into());
    }

    #[test]
    fn unsubscribed_topics_and_no_members() {
        let parts: BTreeMap<String, u32> = [("x".to_string(), 3)].into();
        assert!(assign(&BTreeMap::new(), &parts, &BTreeMap::new()).is_empty());
        assert!(assign(&members(&["a"], &["other"]), &parts, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn grown_topics_spread_new_partitions() {
        let before = assign(&members(&["a", "b"], &["t"]), &[("t".to_string(), 2)].into(), &BTreeMap::new());
        let after = assign(&members(&["a", "b"], &["t"]), &[("t".to_string(), 4)].into(), &before);
        assert_eq!(moved(&before, &after), 0);
        assert!(counts(&after).values().all(|n| *n == 2));
    }
}
