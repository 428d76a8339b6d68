//! Ready tasks that only some engines may take (`targets`, `follow`, a blacklist), grouped
//! by their constraints. Tasks with the same constraints may run on the same engines, so
//! the scheduler looks at the oldest task of each group rather than at every task: a view
//! with `targets` sends thousands of identically constrained tasks, and with one scan per
//! message over all of them, a queue of n such tasks cost O(n²).

use std::collections::{BTreeSet, HashMap};

/// Which group a task is in.
pub(crate) type GroupId = u64;

#[derive(Default)]
pub(crate) struct ConstrainedQueue {
    /// Constraints (as a key) → group; a group leaves when its last task does.
    ids: HashMap<String, GroupId>,
    groups: HashMap<GroupId, Group>,
    /// (oldest seq, group) of every group, oldest first.
    heads: BTreeSet<(u64, GroupId)>,
    next_id: GroupId,
}

struct Group {
    key: String,
    seqs: BTreeSet<u64>,
}

impl ConstrainedQueue {
    /// Adds task `seq` to the group of its constraints (`key`); returns that group.
    pub(crate) fn insert(&mut self, seq: u64, key: String) -> GroupId {
        let id = match self.ids.get(&key) {
            Some(&id) => id,
            None => {
                self.next_id += 1;
                let id = self.next_id;
                self.ids.insert(key.clone(), id);
                let seqs = BTreeSet::new();
                self.groups.insert(id, Group { key, seqs });
                id
            }
        };
        let group = self.groups.get_mut(&id).expect("group just found");
        let old_head = group.seqs.first().copied();
        group.seqs.insert(seq);
        if old_head.is_none_or(|h| seq < h) {
            if let Some(h) = old_head {
                self.heads.remove(&(h, id));
            }
            self.heads.insert((seq, id));
        }
        id
    }

    /// Takes task `seq` out of group `id` (nothing if it is not there).
    pub(crate) fn remove(&mut self, seq: u64, id: GroupId) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        let was_head = group.seqs.first() == Some(&seq);
        if !group.seqs.remove(&seq) {
            return;
        }
        if was_head {
            self.heads.remove(&(seq, id));
            if let Some(&next) = group.seqs.first() {
                self.heads.insert((next, id));
            }
        }
        if group.seqs.is_empty() {
            let group = self.groups.remove(&id).expect("group present");
            self.ids.remove(&group.key);
        }
    }

    /// The oldest task of each group, oldest first.
    pub(crate) fn heads(&self) -> impl Iterator<Item = (u64, GroupId)> + '_ {
        self.heads.iter().copied()
    }

    /// Every task of group `id`.
    pub(crate) fn members(&self, id: GroupId) -> impl Iterator<Item = u64> + '_ {
        self.groups
            .get(&id)
            .into_iter()
            .flat_map(|g| g.seqs.iter().copied())
    }

    #[cfg(test)]
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_their_oldest_task_first_and_leave_when_empty() {
        let mut q = ConstrainedQueue::default();
        let a = q.insert(5, "a".into());
        let b = q.insert(3, "b".into());
        assert_eq!(q.insert(2, "a".into()), a);
        assert_eq!(q.heads().collect::<Vec<_>>(), vec![(2, a), (3, b)]);
        q.remove(2, a);
        assert_eq!(q.heads().collect::<Vec<_>>(), vec![(3, b), (5, a)]);
        q.remove(7, a); // not there: nothing happens
        q.remove(5, a);
        assert_eq!(q.heads().collect::<Vec<_>>(), vec![(3, b)]);
        assert_eq!(q.group_count(), 1);
        assert_ne!(q.insert(9, "a".into()), a, "a new group for the same key");
        assert_eq!(q.members(b).collect::<Vec<_>>(), vec![3]);
    }
}
