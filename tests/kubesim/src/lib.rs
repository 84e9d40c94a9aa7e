//! kubesim: a simulated Kubernetes API server.
