//! The process-wide switch. It lives in a test binary of its own: switched
//! on, it is seen by every thread, so it would leak into the crate's other
//! tests. Only one test here, for the same reason.

use copycat_planted::{active, plant_process, planted, planted_process, with, PlantedBug};

#[test]
fn a_process_wide_bug_is_active_on_every_thread_until_switched_off() {
    assert_eq!(planted_process(), None);
    assert!(!active(PlantedBug::SkipDuplicateCheck));

    plant_process(Some(PlantedBug::SkipDuplicateCheck));
    assert_eq!(planted_process(), Some(PlantedBug::SkipDuplicateCheck));
    assert!(active(PlantedBug::SkipDuplicateCheck));
    assert!(!active(PlantedBug::DoubleVote));
    // Another thread sees it, though its thread-local switch is off.
    std::thread::spawn(|| {
        assert_eq!(planted(), None);
        assert!(active(PlantedBug::SkipDuplicateCheck));
        assert!(!active(PlantedBug::DoubleVote));
    })
    .join()
    .unwrap();
    // A thread-local bug adds to the process-wide one.
    with(Some(PlantedBug::DoubleVote), || {
        assert!(active(PlantedBug::DoubleVote));
        assert!(active(PlantedBug::SkipDuplicateCheck));
    });
    assert!(!active(PlantedBug::DoubleVote));

    // The last variant round-trips through the stored index too.
    let last = *PlantedBug::ALL.last().unwrap();
    plant_process(Some(last));
    assert_eq!(planted_process(), Some(last));
    assert!(!active(PlantedBug::SkipDuplicateCheck));

    plant_process(None);
    assert_eq!(planted_process(), None);
    assert!(!active(last));
    std::thread::spawn(move || assert!(!active(last)))
        .join()
        .unwrap();
}
