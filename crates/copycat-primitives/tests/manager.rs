//! The manager's own rules: get-or-create by name and type, typed errors
//! for the wrong type and each limit, listing, deletion.

mod harness;

use copycat_primitives::lock::{LockCommand, LockOutput};
use copycat_primitives::value::{ValueCommand, ValueQuery};
use copycat_primitives::{
    Command, Event, Limits, Output, Query, ResourceError, ResourceType, Spec,
};
use harness::Harness;

fn limits() -> Limits {
    Limits {
        max_name_bytes: 4,
        max_resources: 3,
        ..Limits::default()
    }
}

fn open(
    h: &mut Harness,
    s: copycat_proto::SessionId,
    name: &str,
    spec: Spec,
) -> Result<Output, ResourceError> {
    h.command(
        s,
        Command::Open {
            name: name.into(),
            spec,
        },
    )
    .0
}

#[test]
fn open_creates_once_and_refuses_another_type() {
    let mut h = Harness::new(limits());
    let s = h.register();
    let first = open(&mut h, s, "a", Spec::Lock { reentrant: true }).expect("created");
    let Output::Opened {
        created: true,
        info,
    } = first
    else {
        panic!("{first:?}")
    };
    let again = open(&mut h, s, "a", Spec::Lock { reentrant: false }).expect("opened");
    assert_eq!(
        again,
        Output::Opened {
            created: false,
            info: info.clone()
        },
        "the first spec stays"
    );
    assert_eq!(info.spec, Spec::Lock { reentrant: true });
    assert_eq!(
        open(&mut h, s, "a", Spec::Value),
        Err(ResourceError::WrongType {
            name: "a".into(),
            expected: ResourceType::Value,
            found: ResourceType::Lock,
        })
    );
    let (wrong, _) = h.command(
        s,
        Command::Value {
            name: "a".into(),
            command: ValueCommand::Listen,
        },
    );
    assert!(matches!(wrong, Err(ResourceError::WrongType { .. })));
    assert_eq!(
        h.query(
            s,
            Query::Value {
                name: "zz".into(),
                query: ValueQuery::Get
            }
        ),
        Err(ResourceError::NotFound { name: "zz".into() })
    );
}

#[test]
fn names_and_counts_are_limited() {
    let mut h = Harness::new(limits());
    let s = h.register();
    assert_eq!(
        open(&mut h, s, "", Spec::Value),
        Err(ResourceError::EmptyName)
    );
    assert_eq!(
        open(&mut h, s, "abcde", Spec::Value),
        Err(ResourceError::NameTooLong { len: 5, limit: 4 })
    );
    for name in ["a", "b", "c"] {
        open(&mut h, s, name, Spec::Value).expect("within the limit");
    }
    assert_eq!(
        open(&mut h, s, "d", Spec::Value),
        Err(ResourceError::TooManyResources { limit: 3 })
    );
    assert_eq!(
        open(&mut h, s, "s", Spec::Semaphore { permits: 0 }),
        Err(ResourceError::TooManyResources { limit: 3 }),
        "the count is checked first"
    );
    h.command(s, Command::Delete { name: "c".into() })
        .0
        .expect("deleted");
    assert!(matches!(
        open(&mut h, s, "s", Spec::Semaphore { permits: 0 }),
        Err(ResourceError::InvalidArgument(_))
    ));
}

#[test]
fn list_pages_names_and_filters_by_type() {
    let mut h = Harness::new(Limits::default());
    let s = h.register();
    for (name, spec) in [
        ("a", Spec::Value),
        ("b", Spec::Long),
        ("c", Spec::Value),
        ("d", Spec::Topic),
    ] {
        open(&mut h, s, name, spec).expect("created");
    }
    let list = |h: &Harness, resource_type, after: Option<&str>, limit| {
        h.query(
            s,
            Query::List {
                resource_type,
                after: after.map(String::from),
                limit,
            },
        )
    };
    assert_eq!(
        list(&h, None, None, 3),
        Ok(Output::Names {
            names: vec!["a".into(), "b".into(), "c".into()],
            next: Some("c".into())
        })
    );
    assert_eq!(
        list(&h, None, Some("c"), 3),
        Ok(Output::Names {
            names: vec!["d".into()],
            next: None
        })
    );
    assert_eq!(
        list(&h, Some(ResourceType::Value), None, 10),
        Ok(Output::Names {
            names: vec!["a".into(), "c".into()],
            next: None
        })
    );
    assert!(matches!(
        list(&h, None, None, 0),
        Err(ResourceError::InvalidArgument(_))
    ));
    assert_eq!(
        h.query(s, Query::Exists { name: "b".into() }),
        Ok(Output::Bool(true))
    );
    assert_eq!(
        h.query(s, Query::Exists { name: "x".into() }),
        Ok(Output::Bool(false))
    );
}

#[test]
fn deleting_a_lock_tells_its_waiters_and_tokens_keep_rising() {
    let mut h = Harness::new(Limits::default());
    let a = h.register();
    let b = h.register();
    let lock = |req| Command::Lock {
        name: "r".into(),
        command: LockCommand::Lock {
            req,
            timeout_ms: None,
        },
    };
    open(&mut h, a, "r", Spec::Lock { reentrant: false }).expect("created");
    let (first, _) = h.command(a, lock(1));
    let Ok(Output::Lock(LockOutput::Acquired(first))) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        h.command(b, lock(7)).0,
        Ok(Output::Lock(LockOutput::Waiting))
    );
    let (deleted, events) = h.command(a, Command::Delete { name: "r".into() });
    assert_eq!(deleted, Ok(Output::Bool(true)));
    assert_eq!(events.get(&a), Some(&vec![Event::Deleted]));
    assert_eq!(events.get(&b), Some(&vec![Event::Deleted]));
    // A lock made again under the same name issues a larger token.
    open(&mut h, b, "r", Spec::Lock { reentrant: false }).expect("created");
    h.snapshot_restore();
    let (second, _) = h.command(b, lock(8));
    let Ok(Output::Lock(LockOutput::Acquired(second))) = second else {
        panic!("{second:?}")
    };
    assert!(second > first, "{second} > {first}");
    assert_eq!(h.machine().fence(), second);
}
