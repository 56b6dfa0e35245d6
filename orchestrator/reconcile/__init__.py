"""The reconcile loop: pure diff and plan, the journaled executor, health, the controller."""
