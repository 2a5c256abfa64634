//! The kess controller: turns the daemons' shuffle state into safe scaling decisions.
//!
//! * [`policy`]: the decisions, as one pure function of an observed view and the time;
//! * [`sim`]: a seeded model cluster that runs that function at scale and checks its promises;
//! * [`observe`]: Kubernetes objects and daemon answers turned into the policy's view;
//! * [`daemons`]: gRPC clients of the daemons, and the pacing of removals;
//! * [`apply`]: what each action writes to Kubernetes, and the writes;
//! * [`lease`]: leader election, so only one replica acts;
//! * [`crd`]: the `ExecutorPool` custom resource;
//! * [`run`]: `kess controller`, the loop that ties them together.

pub mod apply;
pub mod crd;
pub mod daemons;
pub mod lease;
pub mod observe;
pub mod policy;
pub mod run;
pub mod sim;
