//! What the tower layers of the edge share.

/// The service that was made ready (by `poll_ready`) for this call, leaving
/// a fresh clone in its place: the pattern every tower layer here follows
/// so that the ready one serves the call.
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
