"""A real local Kubernetes control plane with simulated GPU nodes, for tests, CI and demos.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as plain processes
built from pinned Go modules (e2e/cluster/build.sh); kwok plays the kubelets of fake nodes
that carry `nvidia.com/gpu` capacity. No Docker needed. Entry points: `sovereign cluster`
(cli.py) and `python -m sovereign_operator.devcluster`; the test fixtures call cluster.py.
"""
