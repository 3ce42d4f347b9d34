//! faultline-real as a library: live mode's pieces, which hold real processes and sockets and so
//! exist only with the `real` feature (the simulator's build sees an empty crate).

#[cfg(feature = "real")]
pub mod live;
