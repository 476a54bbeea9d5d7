//! The actor of the task that writes: set once where work enters (a request's key, a rule's
//! turn, the scheduler, the config file) and stamped by the store on every job, event and
//! balance transaction written inside it, so no call in between has to carry it.

use std::future::Future;

use provisio_core::access::Actor;

tokio::task_local! {
    static ACTOR: Actor;
}

/// Runs `f` with `actor` as the actor of everything it writes.
pub async fn acting<F: Future>(actor: Actor, f: F) -> F::Output {
    ACTOR.scope(actor, f).await
}

/// The actor of the current task, if one was set.
pub fn current_actor() -> Option<Actor> {
    ACTOR.try_with(Clone::clone).ok()
}

/// The stored form of the current actor.
pub(crate) fn stored() -> Option<String> {
    current_actor().map(|a| a.stored())
}

/// `f` under the current task's actor: for work a task spawns, which would otherwise
/// start with none.
pub fn inherit<F: Future>(f: F) -> impl Future<Output = F::Output> {
    let actor = current_actor();
    async move {
        match actor {
            Some(a) => ACTOR.scope(a, f).await,
            None => f.await,
        }
    }
}
