//! k3s node roles: the client load balancer, the supervisor, the kubelet and startup.
//!
//! Everything here runs on a node of the etcd topology and reaches other nodes only over the
//! network. It must never touch an etcd member's state directly: it goes through the etcd API or
//! the apiserver facade, as a real k3s process would.

//!
//! Only [`role`] and [`etcd_client`] (the facade's types name it) are built without `--cfg madsim`: the rest talks over madsim's in-memory
//! connections.

pub mod etcd_client;
#[cfg(madsim)]
pub mod lb;
#[cfg(madsim)]
pub mod node;
pub mod role;
#[cfg(madsim)]
pub mod servers;
#[cfg(madsim)]
pub mod supervisor;
