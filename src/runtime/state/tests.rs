use std::time::Duration;

use super::*;

const FAIL_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn max_fails_within_fail_timeout_make_a_server_unavailable_for_fail_timeout() {
    let s = ServerState::new(true);
    assert!(!s.record_failure_at(1_000, 2, FAIL_TIMEOUT));
    assert_eq!(s.passive_availability(1_000), Availability::Available);
    assert!(
        s.record_failure_at(2_000, 2, FAIL_TIMEOUT),
        "second failure marks it failed"
    );
    assert_eq!(s.passive_availability(2_001), Availability::Unavailable);
    assert_eq!(s.passive_availability(11_999), Availability::Unavailable);
    assert_eq!(s.passive_availability(12_000), Availability::Trial);
}

#[test]
fn failures_further_apart_than_fail_timeout_never_add_up() {
    let s = ServerState::new(true);
    assert!(!s.record_failure_at(1_000, 2, FAIL_TIMEOUT));
    assert!(
        !s.record_failure_at(11_001, 2, FAIL_TIMEOUT),
        "the first window has passed"
    );
    assert_eq!(s.passive_availability(11_002), Availability::Available);
    assert!(s.record_failure_at(12_000, 2, FAIL_TIMEOUT));
}

#[test]
fn a_success_forgets_the_failures_so_far() {
    let s = ServerState::new(true);
    s.record_failure_at(1_000, 2, FAIL_TIMEOUT);
    assert!(!s.record_success(), "it was never unavailable");
    assert!(!s.record_failure_at(1_500, 2, FAIL_TIMEOUT));
    assert_eq!(s.passive_availability(1_500), Availability::Available);
}

#[test]
fn exactly_one_trial_after_fail_timeout_and_its_success_closes() {
    let s = ServerState::new(true);
    s.record_failure_at(1_000, 1, FAIL_TIMEOUT);
    assert_eq!(s.passive_availability(11_000), Availability::Trial);
    assert!(s.claim_trial());
    assert!(!s.claim_trial(), "a second concurrent trial");
    assert_eq!(s.passive_availability(11_000), Availability::Unavailable);
    assert!(s.record_success(), "the trial's success is a recovery");
    assert_eq!(s.passive_availability(11_001), Availability::Available);
    assert!(s.recovered_ms().is_some(), "slow start begins");
}

#[test]
fn a_failed_trial_reopens_for_another_fail_timeout() {
    let s = ServerState::new(true);
    s.record_failure_at(1_000, 1, FAIL_TIMEOUT);
    assert!(s.claim_trial());
    assert!(
        !s.record_failure_at(11_500, 1, FAIL_TIMEOUT),
        "not a new transition"
    );
    assert_eq!(s.passive_availability(21_499), Availability::Unavailable);
    assert_eq!(s.passive_availability(21_500), Availability::Trial);
}

#[test]
fn an_abandoned_trial_lets_the_next_request_try() {
    let s = ServerState::new(true);
    s.record_failure_at(1_000, 1, FAIL_TIMEOUT);
    assert!(s.claim_trial());
    s.abandon_trial();
    assert_eq!(s.passive_availability(11_000), Availability::Trial);
    assert!(s.claim_trial());
}

#[test]
fn max_fails_zero_never_fails_a_server() {
    let s = ServerState::new(true);
    for t in 0..10 {
        assert!(!s.record_failure_at(1_000 + t, 0, FAIL_TIMEOUT));
    }
    assert_eq!(s.passive_availability(1_010), Availability::Available);
    assert_eq!(s.failures(), 10, "failures are still counted");
}

#[test]
fn a_trial_that_fails_once_passive_health_is_off_leaves_the_server_available() {
    let s = ServerState::new(true);
    assert!(s.record_failure_at(1_000, 1, FAIL_TIMEOUT));
    let after = 1_000 + FAIL_TIMEOUT.as_millis() as u64;
    assert_eq!(s.passive_availability(after), Availability::Trial);
    assert!(s.claim_trial());
    // max_fails is 0 now: the failed trial does not fail it again.
    assert!(!s.record_failure_at(after, 0, FAIL_TIMEOUT));
    assert_eq!(s.passive_availability(after), Availability::Available);
}

#[test]
fn one_checker_per_server() {
    let s = ServerState::new(true);
    assert!(s.claim_checker());
    assert!(!s.claim_checker());
    s.release_checker();
    assert!(s.claim_checker());
}

#[test]
fn a_line_of_closes_keeps_the_length_its_first_tunnel_found() {
    let s = ServerState::new(true);
    for _ in 0..4 {
        s.tunnel_opened();
    }
    assert_eq!(s.close_slot(CloseCause::Drain), (0, 4));
    // The first closes before the others take their places (they run on
    // another worker): the line is still four long.
    s.tunnel_closed();
    assert_eq!(s.close_slot(CloseCause::Drain), (1, 4));
    s.tunnel_closed();
    assert_eq!(s.close_slot(CloseCause::Drain), (2, 4));
    assert_eq!(s.close_slot(CloseCause::Drain), (3, 4));
    // A tunnel past the line's end (opened meanwhile) is its last place.
    assert_eq!(s.close_slot(CloseCause::Drain), (4, 5));
    // A new deadline starts a new line.
    s.set_drain_deadline_ms(Some(1));
    assert_eq!(s.close_slot(CloseCause::Drain), (0, 2));
    // Shutdown has a line of its own.
    assert_eq!(s.close_slot(CloseCause::Shutdown), (0, 2));
}
