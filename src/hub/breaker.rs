//! Per-provider circuit breakers. They live outside the snapshot, keyed by provider
//! name, so a reload does not forget that a provider is failing.

use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Cooldown is over; one probe request decides.
    HalfOpen {
        probing: bool,
    },
}

/// A breaker's state as `/health` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerView {
    Closed { consecutive_failures: u32 },
    Open { retry_in_s: f64 },
    HalfOpen,
}

#[derive(Default)]
pub struct Breakers {
    states: Arc<Mutex<FxHashMap<String, State>>>,
}

/// Leave to send one request. A probe that is dropped unresolved (the client went
/// away) hands its turn back so the provider is not stuck half-open.
pub struct Permit {
    name: String,
    probe: bool,
    resolved: bool,
    states: Arc<Mutex<FxHashMap<String, State>>>,
}

impl Breakers {
    fn lock(&self) -> MutexGuard<'_, FxHashMap<String, State>> {
        lock(&self.states)
    }

    /// A permit, or how long the breaker stays open.
    pub fn admit(&self, name: &str, now: Instant) -> Result<Permit, String> {
        let mut states = self.lock();
        // Looked up before inserting: a name is allocated only the first time it is seen.
        if !states.contains_key(name) {
            states.insert(name.to_string(), State::Closed { failures: 0 });
        }
        let Some(state) = states.get_mut(name) else {
            unreachable!("inserted above")
        };
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => {
                return Err(format!(
                    "circuit open after repeated failures; next probe in {:.1}s",
                    (until - now).as_secs_f64()
                ));
            }
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => {
                return Err("circuit half-open: a probe request is in flight".to_string());
            }
        };
        Ok(Permit {
            name: name.to_string(),
            probe,
            resolved: false,
            states: self.states.clone(),
        })
    }

    pub fn view(&self, name: &str, now: Instant) -> BreakerView {
        match self.lock().get(name) {
            None => BreakerView::Closed {
                consecutive_failures: 0,
            },
            Some(State::Closed { failures }) => BreakerView::Closed {
                consecutive_failures: *failures,
            },
            Some(State::Open { until }) if now < *until => BreakerView::Open {
                retry_in_s: (*until - now).as_secs_f64(),
            },
            Some(_) => BreakerView::HalfOpen,
        }
    }
}

impl Permit {
    /// The provider answered (even with a client error): it is alive.
    pub fn success(mut self) {
        self.resolved = true;
        lock(&self.states).insert(self.name.clone(), State::Closed { failures: 0 });
    }

    /// A retryable failure; returns true when this failure opened the circuit.
    pub fn failure(mut self, threshold: u32, cooldown: Duration, now: Instant) -> bool {
        self.resolved = true;
        let mut states = lock(&self.states);
        let state = states
            .entry(self.name.clone())
            .or_insert(State::Closed { failures: 0 });
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            _ => threshold,
        };
        if self.probe || failures >= threshold {
            *state = State::Open {
                until: now + cooldown,
            };
            true
        } else {
            *state = State::Closed { failures };
            false
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.resolved {
            lock(&self.states).insert(self.name.clone(), State::HalfOpen { probing: false });
        }
    }
}

/// A poisoned lock only means another request panicked mid-update; the map is still usable.
fn lock(m: &Mutex<FxHashMap<String, State>>) -> MutexGuard<'_, FxHashMap<String, State>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_threshold_probes_after_cooldown_and_closes_on_success() {
        let b = Breakers::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let opened = b.admit("p", t0).expect("closed").failure(3, COOL, t0);
            assert_eq!(opened, i == 2);
        }
        assert!(b.admit("p", t0 + Duration::from_secs(1)).is_err());
        let later = t0 + COOL + Duration::from_millis(1);
        let probe = b.admit("p", later).expect("probe allowed");
        assert!(b.admit("p", later).is_err(), "only one probe at a time");
        probe.success();
        assert!(b.admit("p", later).is_ok());
        assert_eq!(
            b.view("p", later),
            BreakerView::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[test]
    fn failed_probe_reopens_and_dropped_probe_frees_the_turn() {
        let b = Breakers::default();
        let t0 = Instant::now();
        assert!(b.admit("p", t0).expect("closed").failure(1, COOL, t0));
        let later = t0 + COOL + Duration::from_millis(1);
        assert!(b.admit("p", later).expect("probe").failure(1, COOL, later));
        assert!(b.admit("p", later).is_err());
        let again = later + COOL + Duration::from_millis(1);
        drop(b.admit("p", again).expect("probe"));
        assert!(
            b.admit("p", again).is_ok(),
            "a dropped probe hands its turn back"
        );
    }

    #[test]
    fn success_resets_the_count() {
        let b = Breakers::default();
        let t0 = Instant::now();
        b.admit("p", t0).expect("ok").failure(2, COOL, t0);
        b.admit("p", t0).expect("ok").success();
        assert!(!b.admit("p", t0).expect("ok").failure(2, COOL, t0));
    }
}
