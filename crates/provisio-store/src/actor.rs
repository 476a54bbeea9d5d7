//! The cause of the task that writes: who (a request's key, a rule, the scheduler, the
//! config file) and how many rule firings deep. Set once where work enters and stamped by
//! the store on every job, event and balance transaction written inside it, so no call in
//! between has to carry it.

use std::future::Future;

use provisio_core::access::Actor;

#[derive(Debug, Clone)]
struct Cause {
    actor: Actor,
    /// Rule firings between the outside world and this work: 0 for a request or the
    /// scheduler, one more for each rule that reacted to an event of the chain.
    depth: u32,
}

tokio::task_local! {
    static CAUSE: Cause;
}

/// Runs `f` with `actor` as the actor of everything it writes, at depth 0.
pub async fn acting<F: Future>(actor: Actor, f: F) -> F::Output {
    acting_at(actor, 0, f).await
}

/// Runs `f` as `actor`, `depth` rule firings from the outside world.
pub async fn acting_at<F: Future>(actor: Actor, depth: u32, f: F) -> F::Output {
    CAUSE.scope(Cause { actor, depth }, f).await
}

/// The actor of the current task, if one was set.
pub fn current_actor() -> Option<Actor> {
    CAUSE.try_with(|c| c.actor.clone()).ok()
}

/// The causation depth of the current task (0 when none was set).
pub fn current_depth() -> u32 {
    CAUSE.try_with(|c| c.depth).unwrap_or(0)
}

/// The stored form of the current actor.
pub(crate) fn stored() -> Option<String> {
    current_actor().map(|a| a.stored())
}

/// `f` under the current task's cause: for work a task spawns, which would otherwise
/// start with none.
pub fn inherit<F: Future>(f: F) -> impl Future<Output = F::Output> {
    let cause = CAUSE.try_with(Clone::clone).ok();
    async move {
        match cause {
            Some(c) => CAUSE.scope(c, f).await,
            None => f.await,
        }
    }
}
