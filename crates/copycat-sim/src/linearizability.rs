//! A linearizability checker: Wing & Gong's search with Lowe's memoization,
//! split by key (P-compositionality), under a step budget.
//!
//! # The question
//!
//! A history is linearizable if every operation that completed with `ok` can
//! be given a single instant (its linearization point) between its invocation
//! and its completion, such that applying the operations one by one in the
//! order of those instants to a sequential [`Model`] produces exactly the
//! results the clients saw. Operations that completed with `fail` did not
//! happen and are dropped. Operations of unknown outcome (`info`, or never
//! completed) may be given a point anywhere after their invocation, or none at
//! all: they may or may not have taken effect.
//!
//! # The search (Wing & Gong, with Lowe's memoization)
//!
//! Each key's operations become a doubly linked list of *entries*: a call
//! entry at each invocation and a return entry at each `ok` completion, in
//! history order. Operations of unknown outcome get a call entry but no return
//! entry, which is the same as placing their return after the end of the
//! history. The search walks the list from the front:
//!
//! * At a call entry, it tries to apply the operation to the current model
//!   state. If the model accepts it, the operation is *lifted*: its call and
//!   return entries are unlinked from the list, the previous state is pushed
//!   on a stack, and the walk restarts at the front with the new state.
//!   Otherwise the walk moves on to the next entry.
//! * At a return entry, the operation it belongs to is still unlinearized,
//!   yet it has returned, so no later operation may be linearized before it:
//!   this branch is dead. The search pops the last lifted operation, restores
//!   the state, relinks (*unlifts*) its entries and continues just after its
//!   call entry, so that the next candidate is tried.
//! * When no return entry is left, every `ok` operation is linearized and the
//!   history is linearizable. When a return entry is reached with an empty
//!   stack, every order has been tried and it is not.
//!
//! Lowe's memoization makes this practical: two search nodes with the same set
//! of linearized operations and the same model state have the same future, so
//! the search keeps a cache of `(set of linearized operations as a bitset,
//! model state)` and never lifts into a pair it has seen before. This checker
//! strengthens the cache for operations of unknown outcome: a node that
//! reaches a state with the same `ok` operations linearized as a visited node,
//! but with a superset of its unknown-outcome operations, has strictly fewer
//! options left and is skipped too. Without this, every subset of the timed
//! out writes that leads back to an already seen value would be explored
//! again. Unknown-outcome operations invoked after the last `ok` completion
//! are left out altogether, since nothing after them can observe them.
//!
//! # P-compositionality
//!
//! Linearizability is local: a history is linearizable if and only if the
//! sub-history of each object is. The checker therefore partitions the history
//! by [`Key`] and checks each key on its own, smallest first. This turns one
//! search that is exponential in the total concurrency into several that are
//! exponential only in the concurrency on each key. It requires that the model
//! describes one key's object on its own, which all models here do.
//!
//! # The budget
//!
//! The search is exponential in the worst case, so it runs under a
//! [`CheckConfig`]: a maximum number of search steps (one step is one visit to
//! an entry), shared by all keys, and an optional wall-clock deadline. When
//! either runs out, the verdict is [`Verdict::Unknown`]: the checker never
//! hangs. The simulator is deterministic, so it should prefer the step budget,
//! which gives the same verdict on every run.
//!
//! # Reporting a violation
//!
//! Once a key is known not to be linearizable, the checker looks for a small
//! explanation. Turning an `ok` operation into one of unknown outcome only
//! removes constraints, so if the history is still not linearizable after
//! that, the original history is not linearizable for a reason that does not
//! involve that operation's result. The checker first cuts the history after
//! the earliest `ok` completion where it already fails (linearizability is
//! prefix-closed, so a binary search finds it), then greedily relaxes as many
//! of the remaining `ok` operations as it can, reads first, in halving chunks
//! and finally one at a time. It reports the ones left: the
//! [`Violation::core`], whose results contradict each other, together with
//! the operations of unknown outcome that could have taken effect in between
//! ([`Violation::possible_effects`]). This runs under its own step budget,
//! with a cap on each trial search; when the budget runs out the core is
//! larger than it could be but still a valid explanation, and
//! [`Violation::minimal`] is false.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::time::Instant;

use serde_json::Value;

use crate::history::{Function, History, Key, Operation, OperationId, OperationStatus};

/// What a model sees of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperationView<'a> {
    /// The function called.
    pub f: &'a Function,
    /// The invocation's value.
    pub input: &'a Value,
    /// The result, or `None` if the outcome is unknown; the model must then
    /// accept any result (for example, a read of unknown result leaves the
    /// state as it is).
    pub output: Option<&'a Value>,
}

/// A sequential specification of one key's object.
///
/// The checker asks the model only to apply operations to states, so a new
/// model (counter, set, queue, ...) needs no change to the checker: it defines
/// its state and its functions, using [`Function::Other`] for new names.
pub trait Model {
    /// The object's state. States are cached by the search, so equal states
    /// must mean equal futures: keep the state canonical (for example, sorted).
    type State: Clone + Eq + Hash + fmt::Debug;

    /// The state of a key that nobody has touched.
    fn init(&self) -> Self::State;

    /// Applies `operation` to `state`. Returns the new state, or `None` if the
    /// operation cannot take effect in `state` with the result it reported.
    fn step(&self, state: &Self::State, operation: &OperationView<'_>) -> Option<Self::State>;

    /// Checks that an operation makes sense for this model (a known function,
    /// a well-shaped value) before the search starts, so that a malformed
    /// history is an error rather than a reported violation.
    fn validate(&self, operation: &Operation) -> Result<(), String> {
        let _ = operation;
        Ok(())
    }

    /// Whether the operation never changes the state. An operation of unknown
    /// outcome that is read-only constrains nothing, so the checker drops it.
    fn is_read_only(&self, operation: &OperationView<'_>) -> bool {
        let _ = operation;
        false
    }
}

/// A read / write / compare-and-set register per key.
///
/// * `read`: the input is ignored; an `ok` result must equal the current
///   value. A key never written reads as `null`.
/// * `write`: sets the value to the input.
/// * `cas`: the input is `[expected, new]`; it takes effect only if the
///   current value equals `expected`, and then sets it to `new`. An `ok` cas
///   means it succeeded; a cas that found another value must be recorded as
///   `fail`.
///
/// Values are compared as JSON values, so `1` and `1.0` differ.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Register {
    initial: Value,
}

impl Register {
    /// A register whose keys start as `null`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A register whose keys start with `initial`.
    pub fn with_initial(initial: Value) -> Self {
        Self { initial }
    }
}

impl Model for Register {
    type State = Value;

    fn init(&self) -> Value {
        self.initial.clone()
    }

    fn step(&self, state: &Value, operation: &OperationView<'_>) -> Option<Value> {
        match operation.f {
            Function::Read => match operation.output {
                None => Some(state.clone()),
                Some(read) => (read == state).then(|| state.clone()),
            },
            Function::Write => Some(operation.input.clone()),
            Function::Cas => {
                let [expected, new] = cas_arguments(operation.input)?;
                (expected == state).then(|| new.clone())
            }
            Function::Other(_) => None,
        }
    }

    fn validate(&self, operation: &Operation) -> Result<(), String> {
        match &operation.f {
            Function::Read | Function::Write => Ok(()),
            Function::Cas => match cas_arguments(&operation.input) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "cas needs [expected, new] as its value, got {}",
                    operation.input
                )),
            },
            Function::Other(name) => Err(format!("the register has no function {name:?}")),
        }
    }

    fn is_read_only(&self, operation: &OperationView<'_>) -> bool {
        *operation.f == Function::Read
    }
}

fn cas_arguments(input: &Value) -> Option<[&Value; 2]> {
    match input.as_array()?.as_slice() {
        [expected, new] => Some([expected, new]),
        _ => None,
    }
}

/// Limits on the work of one [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Search steps for the verdict, shared by all keys. One step is one
    /// visit to an entry; the memoization cache holds at most one state per
    /// step, so this also bounds memory.
    pub steps_max: u64,
    /// Search steps for shrinking a violation to its core, after the verdict
    /// is known. When they run out, the violation is reported less minimized.
    pub minimize_steps_max: u64,
    /// An optional wall-clock deadline for the whole check. A deterministic
    /// caller should leave it unset and rely on the step budgets.
    pub deadline: Option<Instant>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            steps_max: 10_000_000,
            minimize_steps_max: 1_000_000,
            deadline: None,
        }
    }
}

impl CheckConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<(), CheckError> {
        if self.steps_max == 0 {
            return Err(CheckError::InvalidConfig("steps_max must be positive"));
        }
        Ok(())
    }
}

/// Why a check could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The configuration is inconsistent.
    #[error("invalid check config: {0}")]
    InvalidConfig(&'static str),
    /// The model does not understand an operation.
    #[error("{operation} is not supported by the model: {reason}")]
    UnsupportedOperation {
        /// The operation.
        operation: OperationId,
        /// What the model said.
        reason: String,
    },
}

/// Which budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetExhausted {
    /// [`CheckConfig::steps_max`] steps were taken.
    Steps,
    /// [`CheckConfig::deadline`] passed.
    Deadline,
}

/// The answer of a [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history is linearizable.
    Linearizable,
    /// At least one key's sub-history is not linearizable. The first such key
    /// found is reported.
    NotLinearizable(Box<Violation>),
    /// The budget ran out before an answer; no key checked so far was found
    /// non-linearizable.
    Unknown {
        /// Which budget ran out.
        reason: BudgetExhausted,
        /// The keys left without an answer, in the order they would have been
        /// checked.
        keys: Vec<Key>,
    },
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// Whether the verdict is [`Verdict::NotLinearizable`].
    pub fn is_not_linearizable(&self) -> bool {
        matches!(self, Verdict::NotLinearizable(_))
    }

    /// Whether the verdict is [`Verdict::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, Verdict::Unknown { .. })
    }
}

/// A key whose sub-history is not linearizable, with an explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: Key,
    /// How many operations the key's sub-history has (all statuses).
    pub operation_count: usize,
    /// `ok` operations whose results cannot all hold. The key's sub-history
    /// with every other `ok` operation turned into one of unknown outcome is
    /// still not linearizable. When [`Violation::minimal`] is true, no
    /// operation of the core can be relaxed that way without making the
    /// sub-history linearizable.
    pub core: Vec<Operation>,
    /// Operations that may have changed the state during the core (invoked
    /// before its last completion, not read-only, not failed), treated as of
    /// unknown outcome in the explanation.
    pub possible_effects: Vec<Operation>,
    /// The longest sequence of operations the search managed to linearize,
    /// in order: where the search got furthest before getting stuck.
    pub longest_linearization: Vec<OperationId>,
    /// Whether shrinking the core finished within its budget.
    pub minimal: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {} is not linearizable ({} operations)",
            self.key, self.operation_count
        )?;
        let qualifier = if self.minimal {
            "minimal"
        } else {
            "not fully minimized"
        };
        writeln!(f, "results that contradict each other ({qualifier}):")?;
        for operation in &self.core {
            writeln!(f, "  {operation}")?;
        }
        if !self.possible_effects.is_empty() {
            writeln!(
                f,
                "operations that may or may not have taken effect meanwhile:"
            )?;
            for operation in &self.possible_effects {
                writeln!(f, "  {operation}")?;
            }
        }
        write!(f, "longest linearization found:")?;
        for id in &self.longest_linearization {
            write!(f, " {id}")?;
        }
        Ok(())
    }
}

/// The result of a [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The answer.
    pub verdict: Verdict,
    /// How many keys the history has.
    pub keys: usize,
    /// Search steps spent on the verdict.
    pub steps: u64,
    /// Search steps spent on shrinking a violation.
    pub minimize_steps: u64,
}

/// Checks whether `history` is linearizable with respect to `model`, key by
/// key, within the limits of `config`.
pub fn check<M: Model>(
    model: &M,
    history: &History,
    config: &CheckConfig,
) -> Result<CheckReport, CheckError> {
    config.validate()?;
    for operation in history.operations() {
        model
            .validate(operation)
            .map_err(|reason| CheckError::UnsupportedOperation {
                operation: operation.id,
                reason,
            })?;
    }

    let mut partitions: BTreeMap<&Key, Vec<&Operation>> = BTreeMap::new();
    for operation in history.operations() {
        partitions
            .entry(&operation.key)
            .or_default()
            .push(operation);
    }
    let keys = partitions.len();
    // Small keys first: they are cheap, so a violation there is found before
    // a large key can spend the whole budget.
    let mut partitions: Vec<(&Key, Vec<&Operation>)> = partitions.into_iter().collect();
    partitions.sort_by_key(|(key, operations)| (operations.len(), *key));

    let mut meter = Meter::new(config.steps_max, config.deadline);
    for (position, (key, operations)) in partitions.iter().enumerate() {
        let relaxed = vec![false; operations.len()];
        match search(model, operations, &relaxed, &mut meter) {
            SearchOutcome::Linearizable => {}
            SearchOutcome::Exhausted(reason) => {
                return Ok(CheckReport {
                    verdict: Verdict::Unknown {
                        reason,
                        keys: partitions[position..]
                            .iter()
                            .map(|(key, _)| (*key).clone())
                            .collect(),
                    },
                    keys,
                    steps: meter.steps,
                    minimize_steps: 0,
                });
            }
            SearchOutcome::NotLinearizable { longest } => {
                let mut minimize_meter = Meter::new(config.minimize_steps_max, config.deadline);
                let violation = explain(
                    model,
                    key,
                    operations,
                    longest,
                    config.minimize_steps_max,
                    &mut minimize_meter,
                );
                return Ok(CheckReport {
                    verdict: Verdict::NotLinearizable(Box::new(violation)),
                    keys,
                    steps: meter.steps,
                    minimize_steps: minimize_meter.steps,
                });
            }
        }
    }
    Ok(CheckReport {
        verdict: Verdict::Linearizable,
        keys,
        steps: meter.steps,
        minimize_steps: 0,
    })
}

/// Counts search steps against a budget.
struct Meter {
    steps: u64,
    steps_max: u64,
    deadline: Option<Instant>,
}

impl Meter {
    /// Reading the clock on every step would dominate the search, so the
    /// deadline is checked once per this many steps.
    const DEADLINE_CHECK_INTERVAL_STEPS: u64 = 1024;

    fn new(steps_max: u64, deadline: Option<Instant>) -> Self {
        Self {
            steps: 0,
            steps_max,
            deadline,
        }
    }

    fn tick(&mut self) -> Result<(), BudgetExhausted> {
        if self.steps >= self.steps_max {
            return Err(BudgetExhausted::Steps);
        }
        self.steps += 1;
        if let Some(deadline) = self.deadline {
            if self.steps % Self::DEADLINE_CHECK_INTERVAL_STEPS == 1 && Instant::now() >= deadline {
                return Err(BudgetExhausted::Deadline);
            }
        }
        Ok(())
    }
}

enum SearchOutcome {
    Linearizable,
    /// `longest` holds positions in the partition, in linearization order.
    NotLinearizable {
        longest: Vec<usize>,
    },
    Exhausted(BudgetExhausted),
}

/// A set of operations, by position in the partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    fn insert(&mut self, index: usize) {
        self.words[index / 64] |= 1 << (index % 64);
    }

    fn remove(&mut self, index: usize) {
        self.words[index / 64] &= !(1 << (index % 64));
    }

    fn is_subset(&self, other: &BitSet) -> bool {
        assert_eq!(self.words.len(), other.words.len());
        self.words
            .iter()
            .zip(&other.words)
            .all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// The search nodes visited so far: Lowe's memoization, strengthened with
/// subset dominance for operations of unknown outcome.
///
/// A node is the set of linearized operations with known outcome, the set of
/// linearized operations of unknown outcome, and the model state. Every
/// visited node has either been fully explored without success or is an
/// ancestor of the current node, whose exploration will cover anything its
/// descendants could do. A node `(known, unknown, state)` is dominated by a
/// visited `(known, fewer, state)` with `fewer` a subset of `unknown`: both
/// must linearize the same remaining `ok` operations under the same real-time
/// constraints from the same state, and the dominating node has every
/// optional operation the other has, and more. So a dominated node can be
/// skipped. With `fewer == unknown` this is Lowe's exact-match cache; the
/// strengthening keeps the search from trying every subset of the unknown
/// operations that leads back to a state it has already seen.
struct Visited<S> {
    nodes: HashMap<(BitSet, S), Vec<BitSet>>,
}

impl<S: Clone + Eq + Hash> Visited<S> {
    fn new() -> Self {
        Self {
            nodes: HashMap::new(),
        }
    }

    /// Records a node. Returns false, recording nothing, if a visited node
    /// dominates it.
    fn insert(&mut self, known: &BitSet, unknown: &BitSet, state: &S) -> bool {
        let seen = self
            .nodes
            .entry((known.clone(), state.clone()))
            .or_default();
        if seen.iter().any(|fewer| fewer.is_subset(unknown)) {
            return false;
        }
        // Whatever the new node dominates, it now dominates on their behalf.
        seen.retain(|more| !unknown.is_subset(more));
        seen.push(unknown.clone());
        true
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKind {
    Call,
    Return,
}

/// One node of the entry list. Node 0 is the head sentinel.
#[derive(Clone, Debug)]
struct Entry {
    kind: EntryKind,
    /// Position of the operation in the partition.
    operation: usize,
    /// For a call, its return node, if the operation has one.
    return_node: Option<usize>,
    previous: usize,
    next: usize,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// The doubly linked entry list, with dancing-links removal: an unlinked
/// node keeps its `previous` and `next`, so relinking in the reverse order of
/// unlinking restores the list exactly. The search's stack guarantees that
/// order.
struct EntryList {
    nodes: Vec<Entry>,
}

impl EntryList {
    fn unlink(&mut self, node: usize) {
        let Entry { previous, next, .. } = self.nodes[node];
        assert_ne!(previous, NIL, "only the head has no previous node");
        self.nodes[previous].next = next;
        if next != NIL {
            self.nodes[next].previous = previous;
        }
    }

    fn relink(&mut self, node: usize) {
        let Entry { previous, next, .. } = self.nodes[node];
        self.nodes[previous].next = node;
        if next != NIL {
            self.nodes[next].previous = node;
        }
    }

    fn lift(&mut self, call: usize) {
        assert_eq!(self.nodes[call].kind, EntryKind::Call);
        self.unlink(call);
        if let Some(return_node) = self.nodes[call].return_node {
            self.unlink(return_node);
        }
    }

    fn unlift(&mut self, call: usize) {
        assert_eq!(self.nodes[call].kind, EntryKind::Call);
        if let Some(return_node) = self.nodes[call].return_node {
            self.relink(return_node);
        }
        self.relink(call);
    }
}

/// Whether the search must linearize the operation: it completed with `ok`
/// and is not relaxed to an unknown outcome.
fn known_outcome(operation: &Operation, relaxed: bool) -> bool {
    operation.status == OperationStatus::Ok && !relaxed
}

fn view<'a>(operation: &'a Operation, relaxed: bool) -> OperationView<'a> {
    let known = known_outcome(operation, relaxed);
    OperationView {
        f: &operation.f,
        input: &operation.input,
        output: if known {
            operation.output.as_ref()
        } else {
            None
        },
    }
}

/// Whether an operation takes part in the search. Failed operations did not
/// happen; a read-only operation of unknown outcome constrains nothing.
fn participates<M: Model>(model: &M, operation: &Operation, relaxed: bool) -> bool {
    match operation.status {
        OperationStatus::Fail => false,
        OperationStatus::Ok if known_outcome(operation, relaxed) => true,
        _ => !model.is_read_only(&view(operation, relaxed)),
    }
}

/// Builds the entry list of one partition. Operations in `relaxed` are
/// treated as of unknown outcome. Returns the list and the number of return
/// entries.
fn build_entries<M: Model>(
    model: &M,
    operations: &[&Operation],
    relaxed: &[bool],
) -> (EntryList, usize) {
    // An operation of unknown outcome invoked after the last `ok` return
    // could only be linearized after every `ok` operation, where it
    // constrains nothing; leaving it out keeps the search from trying it at
    // every step.
    let last_return = (0..operations.len())
        .filter(|&position| known_outcome(operations[position], relaxed[position]))
        .filter_map(|position| operations[position].complete_index)
        .max();
    // (event index, kind, operation position); history event indices are
    // unique, so sorting by them gives the real-time order.
    let mut events: Vec<(usize, EntryKind, usize)> = Vec::new();
    for (position, operation) in operations.iter().enumerate() {
        if !participates(model, operation, relaxed[position]) {
            continue;
        }
        let known = known_outcome(operation, relaxed[position]);
        if !known && last_return.is_none_or(|last| operation.invoke_index > last) {
            continue;
        }
        events.push((operation.invoke_index, EntryKind::Call, position));
        if known {
            let complete_index = operation
                .complete_index
                .expect("an ok operation has a completion");
            assert!(complete_index > operation.invoke_index);
            events.push((complete_index, EntryKind::Return, position));
        }
    }
    events.sort_unstable_by_key(|&(index, _, _)| index);

    let mut nodes = Vec::with_capacity(events.len() + 1);
    nodes.push(Entry {
        kind: EntryKind::Call,
        operation: usize::MAX,
        return_node: None,
        previous: NIL,
        next: if events.is_empty() { NIL } else { 1 },
    });
    let mut call_node_of = vec![NIL; operations.len()];
    let mut returns = 0;
    for (offset, &(_, kind, position)) in events.iter().enumerate() {
        let node = offset + 1;
        nodes.push(Entry {
            kind,
            operation: position,
            return_node: None,
            previous: node - 1,
            next: if node == events.len() { NIL } else { node + 1 },
        });
        match kind {
            EntryKind::Call => call_node_of[position] = node,
            EntryKind::Return => {
                let call = call_node_of[position];
                assert_ne!(call, NIL, "a return entry follows its call entry");
                nodes[call].return_node = Some(node);
                returns += 1;
            }
        }
    }
    (EntryList { nodes }, returns)
}

/// The Wing & Gong search with Lowe's memoization over one partition.
fn search<M: Model>(
    model: &M,
    operations: &[&Operation],
    relaxed: &[bool],
    meter: &mut Meter,
) -> SearchOutcome {
    assert_eq!(operations.len(), relaxed.len());
    let (mut list, mut returns_left) = build_entries(model, operations, relaxed);

    let known: Vec<bool> = (0..operations.len())
        .map(|position| known_outcome(operations[position], relaxed[position]))
        .collect();
    let mut state = model.init();
    // Linearized operations, split by whether their outcome is known.
    let mut linearized_known = BitSet::new(operations.len());
    let mut linearized_unknown = BitSet::new(operations.len());
    let mut visited: Visited<M::State> = Visited::new();
    // The lifted call nodes, each with the state before it was applied.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut current = list.nodes[HEAD].next;

    loop {
        if returns_left == 0 {
            return SearchOutcome::Linearizable;
        }
        if let Err(reason) = meter.tick() {
            return SearchOutcome::Exhausted(reason);
        }
        // A return entry is still linked, and the walk cannot pass one, so
        // it cannot reach the end of the list.
        assert_ne!(current, NIL, "walked past every return entry");
        let entry = &list.nodes[current];
        let position = entry.operation;
        match entry.kind {
            EntryKind::Call => {
                let operation = view(operations[position], relaxed[position]);
                if let Some(next_state) = model.step(&state, &operation) {
                    let linearized = if known[position] {
                        &mut linearized_known
                    } else {
                        &mut linearized_unknown
                    };
                    linearized.insert(position);
                    if visited.insert(&linearized_known, &linearized_unknown, &next_state) {
                        let previous_state = std::mem::replace(&mut state, next_state);
                        stack.push((current, previous_state));
                        if list.nodes[current].return_node.is_some() {
                            returns_left -= 1;
                        }
                        list.lift(current);
                        if stack.len() > longest.len() {
                            longest = stack
                                .iter()
                                .map(|&(node, _)| list.nodes[node].operation)
                                .collect();
                        }
                        current = list.nodes[HEAD].next;
                        continue;
                    }
                    if known[position] {
                        linearized_known.remove(position);
                    } else {
                        linearized_unknown.remove(position);
                    }
                }
                current = list.nodes[current].next;
            }
            EntryKind::Return => {
                // This operation returned before anything still unlinearized
                // was linearized: undo the last choice and try the next one.
                let Some((call, previous_state)) = stack.pop() else {
                    return SearchOutcome::NotLinearizable { longest };
                };
                state = previous_state;
                let lifted = list.nodes[call].operation;
                if known[lifted] {
                    linearized_known.remove(lifted);
                } else {
                    linearized_unknown.remove(lifted);
                }
                list.unlift(call);
                if list.nodes[call].return_node.is_some() {
                    returns_left += 1;
                }
                current = list.nodes[call].next;
            }
        }
    }
}

/// Shrinks a non-linearizable partition to a core of `ok` operations whose
/// results contradict each other.
///
/// Invariant: the partition with the `relaxed` operations turned into ones of
/// unknown outcome is not linearizable. Every relaxation is kept only once a
/// search has shown that it preserves this, so running out of budget makes
/// the core larger, never wrong.
fn explain<M: Model>(
    model: &M,
    key: &Key,
    operations: &[&Operation],
    longest: Vec<usize>,
    minimize_steps_max: u64,
    meter: &mut Meter,
) -> Violation {
    // One search with many operations relaxed can be exponentially harder
    // than the original; capping each trial keeps one such trial from
    // spending the whole budget.
    let mut trials = Trials {
        meter,
        trial_steps_max: (minimize_steps_max / Trials::TRIALS_PER_BUDGET).max(1),
    };
    let mut relaxed = vec![false; operations.len()];
    let mut candidates: Vec<usize> = (0..operations.len())
        .filter(|&position| operations[position].status == OperationStatus::Ok)
        .collect();

    // Linearizability is prefix-closed: cutting the history just after some
    // completion, and treating operations still running there as of unknown
    // outcome, cannot turn a linearizable history into a non-linearizable
    // one. So the shortest non-linearizable prefix is found by binary search
    // over the `ok` completions, and everything completing later is relaxed.
    let mut completions: Vec<usize> = candidates
        .iter()
        .filter_map(|&position| operations[position].complete_index)
        .collect();
    completions.sort_unstable();
    let relax_after = |relaxed: &mut [bool], cut: usize| {
        for &position in &candidates {
            relaxed[position] = operations[position].complete_index > Some(cut);
        }
    };
    let (mut low, mut high) = (0, completions.len().saturating_sub(1));
    while low < high && !trials.exhausted() {
        let middle = low + (high - low) / 2;
        relax_after(&mut relaxed, completions[middle]);
        if trials.run(model, operations, &relaxed) == Some(false) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    if let Some(&cut) = completions.get(high) {
        relax_after(&mut relaxed, cut);
    }

    // Then relax what is left greedily, in halving chunks and finally one by
    // one. Read-only operations go first: relaxing one removes it from the
    // search, whereas relaxing a write adds an operation of unknown outcome,
    // which makes the search harder.
    candidates.retain(|&position| !relaxed[position]);
    candidates.sort_by_key(|&position| {
        let read_only = model.is_read_only(&view(operations[position], false));
        (
            !read_only,
            std::cmp::Reverse(operations[position].invoke_index),
        )
    });
    // Relaxing more operations only makes a history easier to linearize. So
    // once relaxing one operation alone made the history linearizable, that
    // operation stays needed however many others are relaxed later.
    let mut needed = vec![false; operations.len()];
    let mut chunk_len = (candidates.len() / 2).max(1);
    loop {
        let remaining: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&position| !relaxed[position])
            .collect();
        for chunk in remaining.chunks(chunk_len) {
            if trials.exhausted() {
                break;
            }
            for &position in chunk {
                relaxed[position] = true;
            }
            let linearizable = trials.run(model, operations, &relaxed);
            if linearizable != Some(false) {
                for &position in chunk {
                    relaxed[position] = false;
                }
            }
            if let (&[position], Some(true)) = (chunk, linearizable) {
                needed[position] = true;
            }
        }
        if chunk_len == 1 || trials.exhausted() {
            break;
        }
        chunk_len = (chunk_len / 2).max(1);
    }
    let minimal = (0..operations.len())
        .filter(|&position| known_outcome(operations[position], relaxed[position]))
        .all(|position| needed[position]);

    let core: Vec<Operation> = (0..operations.len())
        .filter(|&position| known_outcome(operations[position], relaxed[position]))
        .map(|position| operations[position].clone())
        .collect();
    assert!(
        !core.is_empty(),
        "a history with no ok operation is linearizable"
    );
    let core_end = core
        .iter()
        .filter_map(|operation| operation.complete_index)
        .max()
        .unwrap_or(usize::MAX);
    let possible_effects = operations
        .iter()
        .enumerate()
        .filter(|&(position, operation)| {
            let unknown = operation.status.is_unknown() || relaxed[position];
            unknown
                && operation.invoke_index < core_end
                && participates(model, operation, relaxed[position])
        })
        .map(|(_, operation)| (*operation).clone())
        .collect();
    Violation {
        key: key.clone(),
        operation_count: operations.len(),
        core,
        possible_effects,
        longest_linearization: longest
            .into_iter()
            .map(|position| operations[position].id)
            .collect(),
        minimal,
    }
}

/// The trial searches of [`explain`], each under its own cap within the
/// shared minimization budget.
struct Trials<'m> {
    meter: &'m mut Meter,
    trial_steps_max: u64,
}

impl Trials<'_> {
    /// How many trials of the full cap the minimization budget allows.
    const TRIALS_PER_BUDGET: u64 = 8;

    fn exhausted(&self) -> bool {
        self.meter.steps >= self.meter.steps_max
    }

    /// Whether the partition with `relaxed` operations of unknown outcome is
    /// linearizable, or `None` if the trial ran out of steps or time.
    fn run<M: Model>(
        &mut self,
        model: &M,
        operations: &[&Operation],
        relaxed: &[bool],
    ) -> Option<bool> {
        let left = self.meter.steps_max.saturating_sub(self.meter.steps);
        let mut trial = Meter::new(self.trial_steps_max.min(left), self.meter.deadline);
        let outcome = search(model, operations, relaxed, &mut trial);
        self.meter.steps += trial.steps;
        match outcome {
            SearchOutcome::NotLinearizable { .. } => Some(false),
            SearchOutcome::Linearizable => Some(true),
            SearchOutcome::Exhausted(BudgetExhausted::Steps) => None,
            SearchOutcome::Exhausted(BudgetExhausted::Deadline) => {
                // No later trial can finish either.
                self.meter.steps = self.meter.steps_max;
                None
            }
        }
    }
}
