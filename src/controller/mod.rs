//! The kess controller: turns the daemons' shuffle state into safe scaling decisions.
//!
//! * [`policy`]: the decisions, as one pure function of an observed view and the time;
//! * [`sim`]: a seeded model cluster that runs that function at scale and checks its promises.

pub mod crd;
pub mod policy;
pub mod sim;
