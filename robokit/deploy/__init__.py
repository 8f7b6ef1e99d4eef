"""Deploy: wire protocol, policy server and client, temporal ensembling, real-time control loop.

Submodules are imported explicitly (``from robokit.deploy.client import PolicyClient``); this
package file imports nothing so that the client stays free of torch.
"""
