"""Use cases: intake, leads, rollout, the guard, the reply pipeline and operator actions.

They depend on the domain, on ports and on the store's interface; bootstrap wires them to adapters.
"""
