//! k3s node roles: the client load balancer, the supervisor, the kubelet and startup.
//!
//! Everything here runs on a node of the etcd topology and reaches other nodes only over the
//! network. It must never touch an etcd member's state directly: it goes through the etcd API or
//! the apiserver facade, as a real k3s process would.

pub mod etcd_client;
pub mod lb;
pub mod node;
pub mod servers;
pub mod supervisor;
