//! The job scheduler example runs: three embedded servers, a client, and
//! the jobs' events in the order they came due (the cancelled one never).

#[path = "../examples/job_scheduler.rs"]
mod job_scheduler;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_scheduler_example_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let due = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        job_scheduler::run(dir.path()),
    )
    .await
    .expect("finished in time")
    .expect("ran");
    assert_eq!(due, ["report", "cleanup", "backup"]);
}
