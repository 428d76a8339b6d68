//! The automatic high-water mark (`--hwm auto`, the default): an engine is sent more than
//! one task at a time only while its tasks are short. Then the round trip of each task
//! (reply to the controller, next task to the engine) hides behind the engine's work on
//! the tasks it already holds, and the wake-ups of every process on the way are shared
//! by several tasks: W3 on 2 engines goes from about 4,000 to 8,000+ tasks/s. A long task
//! keeps the ipyparallel default of one task per engine, so it never holds back short
//! tasks that another engine could take.
//!
//! The scheduler keeps, per engine, an estimate of how long one task takes there: the
//! time from the engine's last sign of progress (a reply, or a task sent while it held
//! none) to its next reply. The estimate follows a longer task at once and a shorter one
//! slowly. An engine may hold as many tasks as fit in [`QUEUED_WORK`] at that estimate,
//! up to [`MAX_DEPTH`]; one that has been silent for longer than [`QUEUED_WORK`] while
//! holding tasks (a long task the estimate did not foresee) gets no more until it replies.
//! So what waits behind a task that turns out long is at most what was sent in its first
//! 2 ms, at most [`MAX_DEPTH`] − 1 tasks.

use std::time::{Duration, Instant};

/// How much work, at an engine's estimated pace, may wait on the engine behind the task
/// it runs, and how long an engine holding tasks may stay silent before it gets no more.
/// W3 on 2 cores: 1 ms gave 6,100–7,200 tasks/s (noop tasks take 250 µs there, reply to
/// reply, so engines held 4), 2 ms gives 8,000–8,200 (8 each).
pub(crate) const QUEUED_WORK: Duration = Duration::from_millis(2);

/// The most tasks an engine holds under the automatic mark, however short they are: past
/// 8, W3 gains nothing more (8,100–9,100 tasks/s at 8 and with no limit).
pub(crate) const MAX_DEPTH: usize = 8;

/// One engine's pace, as the scheduler sees it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pace {
    /// How long one task takes on the engine, reply to reply; `None` before its first.
    estimate: Option<Duration>,
    /// The engine's last sign of progress while it held tasks.
    progress: Option<Instant>,
    /// Replies since the engine's stream of tasks last paused (it held none for longer
    /// than [`QUEUED_WORK`]). Its depth grows by one per reply (as TCP's slow start), so
    /// a burst of tasks sent after a pause goes out one per engine, however short the
    /// tasks before the pause were: a long task learns nothing from short ones.
    streak: usize,
}

impl Pace {
    /// A task was sent to the engine, which held `held` tasks before it.
    pub(crate) fn sent(&mut self, held: usize, now: Instant) {
        if held == 0 {
            let paused = self
                .progress
                .is_none_or(|p| now.saturating_duration_since(p) > QUEUED_WORK);
            if paused {
                self.streak = 0;
            }
            self.progress = Some(now);
        }
    }

    /// The engine answered one of its tasks.
    pub(crate) fn replied(&mut self, now: Instant) {
        if let Some(since) = self.progress {
            let took = now.saturating_duration_since(since);
            self.estimate = Some(match self.estimate {
                Some(e) if took < e => e - (e - took) / 4,
                _ => took,
            });
        }
        self.progress = Some(now);
        self.streak = self.streak.saturating_add(1);
    }

    /// How many tasks the engine may hold at `now`, holding `held`.
    pub(crate) fn depth(&self, held: usize, now: Instant) -> usize {
        let Some(estimate) = self.estimate else {
            return 1;
        };
        let silent = self
            .progress
            .is_some_and(|p| now.saturating_duration_since(p) > QUEUED_WORK);
        if held > 0 && silent {
            return 1;
        }
        let fit = QUEUED_WORK.as_nanos() / estimate.as_nanos().max(1);
        let fit = fit.clamp(1, MAX_DEPTH as u128) as usize;
        fit.min(self.streak + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// An engine that answered 20 tasks of 50 µs each, one at a time, and the time now.
    fn after_short_tasks() -> (Pace, Instant) {
        let mut pace = Pace::default();
        let mut now = Instant::now();
        for _ in 0..20 {
            pace.sent(0, now);
            now += us(50);
            pace.replied(now);
        }
        (pace, now)
    }

    #[test]
    fn an_engine_not_yet_seen_to_answer_holds_one_task() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        assert_eq!(pace.depth(0, t0), 1);
        pace.sent(0, t0);
        assert_eq!(pace.depth(1, t0), 1);
    }

    #[test]
    fn short_tasks_deepen_the_queue_one_reply_at_a_time_up_to_the_cap() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        pace.sent(0, t0);
        pace.replied(t0 + us(800));
        // 2 ms of queued work at 800 µs a task.
        assert_eq!(pace.depth(0, t0 + us(800)), 2);
        let mut now = t0 + us(800);
        let mut depths = Vec::new();
        for _ in 0..10 {
            pace.sent(0, now);
            now += us(50);
            pace.replied(now);
            depths.push(pace.depth(0, now));
        }
        assert_eq!(depths, [3, 4, 5, 6, 7, 8, 8, 8, 8, 8]);
    }

    #[test]
    fn after_a_pause_an_engine_starts_again_from_one_task() {
        let (mut pace, mut now) = after_short_tasks();
        assert_eq!(pace.depth(0, now), MAX_DEPTH);
        // The user thinks, then sends long tasks: the first goes alone.
        now += Duration::from_secs(1);
        pace.sent(0, now);
        assert_eq!(pace.depth(1, now), 1);
        // Sent again within QUEUED_WORK of a reply: the stream goes on.
        now += us(50);
        pace.replied(now);
        pace.sent(0, now + us(100));
        assert_eq!(pace.depth(1, now + us(100)), 2);
    }

    #[test]
    fn one_long_task_is_enough_to_stop_pipelining() {
        let (mut pace, mut now) = after_short_tasks();
        assert_eq!(pace.depth(0, now), MAX_DEPTH);
        pace.sent(0, now);
        now += Duration::from_secs(2);
        pace.replied(now);
        assert_eq!(pace.depth(0, now), 1);
    }

    #[test]
    fn an_engine_silent_for_longer_than_the_queued_work_gets_no_more() {
        let (mut pace, now) = after_short_tasks();
        pace.sent(0, now);
        assert_eq!(pace.depth(1, now + us(500)), MAX_DEPTH);
        assert_eq!(pace.depth(1, now + QUEUED_WORK + us(1)), 1);
        // An idle engine is never "silent": it has nothing to answer.
        assert_eq!(pace.depth(0, now + Duration::from_secs(5)), MAX_DEPTH);
    }
}
