//! The daily sweep's calendar of visits: by UTC day, the customers a sweep
//! must look at, so that a sweep costs the customers where something can
//! change that day rather than every customer.
//!
//! A customer is filed at the earliest day its next visit can be needed
//! (computed by the engine from its state when an event, a timer or a visit
//! changed it); the sweep of that day visits it, finds what it must do
//! there, and files it again. Filing only ever moves a customer's next
//! visit earlier: a later entry left behind is skipped when its day comes.
//! The calendar is derived from the customers' state: a restore files every
//! customer afresh.

use std::collections::VecDeque;

/// No visit filed.
const NONE: i32 = i32::MAX;

/// Customers by the day of the sweep that visits them.
#[derive(Debug, Default)]
pub(super) struct Visits {
    /// Entries by day, from `first_day` on (a day already swept files at
    /// `first_day`: the next sweep's).
    by_day: VecDeque<Vec<u32>>,
    first_day: i32,
    /// Per customer, its earliest filed day ([`NONE`]: none).
    filed: Vec<i32>,
    /// Entries in `by_day`, superseded ones included.
    entries: usize,
}

impl Visits {
    /// A new customer, not filed.
    pub(super) fn push_customer(&mut self) {
        self.filed.push(NONE);
    }

    /// Files `ix` for the sweep of `day`, unless it is filed no later.
    pub(super) fn file(&mut self, ix: u32, day: i32) {
        let f = &mut self.filed[ix as usize];
        if day < *f {
            *f = day;
            if self.by_day.is_empty() {
                self.first_day = day;
            }
            if day < self.first_day {
                let n = (self.first_day - day) as usize;
                for _ in 0..n {
                    self.by_day.push_front(Vec::new());
                }
                self.first_day = day;
            }
            let i = (day - self.first_day) as usize;
            if i >= self.by_day.len() {
                self.by_day.resize_with(i + 1, Vec::new);
            }
            self.by_day[i].push(ix);
            self.entries += 1;
        }
    }

    /// The customers a sweep of `today` visits: those filed for it or
    /// before, ascending, each once; they are no longer filed.
    pub(super) fn take_due(&mut self, today: i32) -> Vec<u32> {
        let mut due = Vec::new();
        while self.first_day <= today {
            let Some(list) = self.by_day.pop_front() else {
                break;
            };
            self.first_day += 1;
            self.entries -= list.len();
            due.extend(
                list.into_iter()
                    .filter(|&ix| self.filed[ix as usize] <= today),
            );
        }
        due.sort_unstable();
        due.dedup();
        for &ix in &due {
            self.filed[ix as usize] = NONE;
        }
        due
    }

    /// Whether `ix` is filed for a sweep of `day` or before.
    pub(super) fn is_filed_by(&self, ix: u32, day: i32) -> bool {
        self.filed[ix as usize] <= day
    }

    /// Forgets every entry, for `customers` customers none filed.
    pub(super) fn reset(&mut self, customers: usize) {
        self.by_day = VecDeque::new();
        self.filed = vec![NONE; customers];
        self.entries = 0;
    }

    /// Heap bytes: the per-customer day and the entries.
    pub(super) fn heap_bytes(&self) -> usize {
        self.filed.capacity() * std::mem::size_of::<i32>()
            + self.by_day.capacity() * std::mem::size_of::<Vec<u32>>()
            + self
                .by_day
                .iter()
                .map(|v| v.capacity() * std::mem::size_of::<u32>())
                .sum::<usize>()
    }

    /// Entries held, superseded ones included.
    pub(super) fn len(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::Visits;

    #[test]
    fn a_customer_is_visited_once_at_its_earliest_filed_day() {
        let mut v = Visits::default();
        for _ in 0..3 {
            v.push_customer();
        }
        v.file(0, 5);
        v.file(0, 3); // earlier: moves
        v.file(0, 9); // later: ignored
        v.file(1, 4);
        v.file(2, 3);
        v.file(2, 3);
        assert_eq!(v.take_due(2), Vec::<u32>::new());
        assert_eq!(v.take_due(3), vec![0, 2]);
        // 0's entry at 5 is superseded: not visited again unless filed again.
        v.file(2, 5);
        assert_eq!(v.take_due(5), vec![1, 2]);
        assert_eq!(v.len(), 0);
        v.file(0, 7);
        assert!(v.is_filed_by(0, 7) && !v.is_filed_by(0, 6));
        assert_eq!(v.take_due(100), vec![0]);
    }
}
