"""Test-only Kubernetes: an apiserver emulator, a kubelet running Jobs as local processes, kubectl.

No cluster can run on the test machine; these parts stand in for one, each as close to the real
behaviour as the operator, the exporter and the API rely on (and pinned by tests of their own).
"""
